from credits_graphql.cli import main

main()
