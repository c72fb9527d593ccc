// Package bench is LambdaBench: workloads that measure lambdadb and, on the
// same machine in the same run, its reference peers (etcd 3.4 for the KV
// paths). Clusters run as separate processes on 127.0.0.1 only.
//
// The package is used by one driver goroutine; workloads start their own
// client goroutines and stop them before returning.
package bench
