"""credits_graphql: prepaid communication credits behind a GraphQL API."""
