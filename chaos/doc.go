// Package chaos is lambdadb's nemesis harness: it runs a cluster of
// `lambdadb serve` processes on 127.0.0.1, drives a concurrent register
// workload and session clients against it while injecting faults (kill -9,
// SIGSTOP/SIGCONT, partitions and one-way drops through the nodes'
// /debug/faults), records every operation's invocation and completion, and
// checks the history: linearizability per key with porcupine, no
// acknowledged write lost, session guarantees, and identical data on every
// node at the end.
//
// Run drives one run and returns its Report; chaos/cmd/nemesis is the
// command-line entry point (make chaos, make chaos-quick). Check and the
// register model are usable on their own, on histories built by hand.
//
// A History is safe for concurrent use; everything else belongs to the
// goroutine that created it unless its comment says otherwise.
package chaos
