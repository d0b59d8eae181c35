"""One request's answer: the policy's layers around the upstream call, chains, retries, the cache."""
