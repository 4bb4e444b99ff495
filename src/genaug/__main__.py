from genaug.cli import main

main()
