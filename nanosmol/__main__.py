from nanosmol.cli import main

main()
