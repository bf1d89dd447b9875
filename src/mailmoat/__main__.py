from mailmoat.cli import main

main()
