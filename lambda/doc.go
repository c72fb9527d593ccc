// Package lambda runs user functions — WebAssembly modules built with the
// guest SDK (lambdadb/sdk/fn) — next to the data, in wazero sandboxes.
//
// An Engine is one node's function runtime. It keeps the function registry
// in the shards' replicated system space (content-addressed by SHA-256, so
// every node can run every function), compiles modules with wazero's
// compiler into an on-disk compilation cache, and keeps a pool of sandboxes
// per function in one of four states, as in the OpenLambda paper (§4.1):
//
//   - running: an instance serving a call;
//   - paused: an instantiated, idle instance; the next call resumes it in
//     microseconds ("warm" start), at the cost of its memory;
//   - stopped: an instance was evicted (by the node's memory budget, LRU,
//     or by the keep-alive) but the compiled module is still in memory;
//     the next call instantiates it ("restart");
//   - cold: the node holds no compiled module; the next call compiles
//     (from the on-disk cache when present) and instantiates ("cold").
//
// Every call is capped in memory (WithMemoryLimitPages) and time
// (WithCloseOnContextDone) and metered: wall time in µs, billed time
// rounded up to the billing granularity, memory × billed time in GB-s, host
// KV calls and bytes. Guests get no filesystem, network, environment or
// wall clock; their only way out is the host API (host.go), whose every
// pointer is bounds-checked.
//
// KV calls made by a handler go through the Store (satisfied by
// *shard.Node) with the caller's session token, and the writes they make
// merge into the token returned with the result.
//
// # Concurrency
//
// An Engine is safe for concurrent use. An instance serves one call at a
// time; a function scales to MaxInstances instances per node and queues
// calls beyond that up to Config.QueueLength, after which Invoke fails with
// ErrOverloaded. Close waits for nothing: in-flight calls are aborted.
package lambda
