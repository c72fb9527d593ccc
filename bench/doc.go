// Package bench is LambdaBench: a suite that runs the OpenLambda paper's
// experiments on lambdadb and measures its KV paths against etcd 3.4, and
// in secure mode against insecure mode, on the same machine in the same run, and writes a report (report.json,
// report.md) with SVG plots.
//
// Scenarios are registered in Scenarios (scenario.go): each starts the
// processes it needs — `lambdadb serve` and etcd, on 127.0.0.1 only —
// drives them as a client would, and returns its section of the Report.
// RunSuite runs a selection of them one after the other. Sizes come in
// two profiles, QuickSizes and FullSizes. The command is
// bench/cmd/lambdabench; `make bench` and `make bench-quick` run it.
//
// The package is used by one driver goroutine; workloads start their own
// client goroutines and stop them before returning.
package bench
