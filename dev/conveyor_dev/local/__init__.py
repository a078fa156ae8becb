"""The whole system on one machine: `make local`, the soak, the metering proxy, the outside
oracle, throwaway mTLS material and the demo handlers."""
