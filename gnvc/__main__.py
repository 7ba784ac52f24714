from gnvc.cli import main

main()
