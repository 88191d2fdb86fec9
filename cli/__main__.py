from precall.cli.app import main

main()
