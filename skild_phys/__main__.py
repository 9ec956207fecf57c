from skild_phys.cli import main

main()
