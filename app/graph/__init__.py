"""GraphQL beside REST (`/graphql`): the schema generated from the six operations' models
(schema), a request's documents read (reading), checked and planned (documents), run through the
same operations at once and shaped by their selections (endpoint, shaping). docs/api.md."""
