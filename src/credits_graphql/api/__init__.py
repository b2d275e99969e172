"""The GraphQL surface: Strawberry types and thin resolvers over `service`."""
