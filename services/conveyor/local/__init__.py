"""Local development tooling: throwaway mTLS material and the AWS backend harness."""
