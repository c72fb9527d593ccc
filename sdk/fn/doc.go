// Package fn is the guest SDK for lambdadb handlers: WebAssembly functions
// that run inside the database, next to the shard that holds their data.
//
// A handler is a Go main package that imports fn, registers its entry points
// in init, and builds with the standard toolchain:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o h.wasm .
//
// Entry points:
//
//	fn.Handle(func(c *fn.Ctx, req []byte) ([]byte, error))  // POST /v1/functions/{name}/invoke
//	fn.OnChanges(func(c *fn.Ctx, batch []fn.Change) error)  // triggers
//	fn.Leaf(func(c *fn.Ctx, prefix string) ([]byte, error)) // scatter leaf, once per shard
//	fn.Combine(func(parts [][]byte) ([]byte, error))        // scatter combine
//
// Inside an entry point, the Ctx reaches the database: Get, Put, Delete,
// CompareAndPut and Scan run in the host, against the node the sandbox runs
// on, carrying the caller's session so the caller later reads what the
// handler wrote. Log writes to the function's log; Sleep blocks in the host
// without burning CPU. A sandbox has no filesystem, network, environment or
// wall clock beyond this API.
//
// # Concurrency
//
// A sandbox runs one call at a time: entry points never run concurrently
// within one instance, and an instance may serve many calls in a row
// (package-level state survives between calls of one instance but is not
// shared between instances; keep state in the database). Goroutines a
// handler starts make progress only while one of its calls is running.
//
// # ABI
//
// The module boundary (exports ldb_abi_version, ldb_entrypoints,
// ldb_invoke; imports from module "lambdadb") is described in
// docs/handlers.md. Messages across it are msgpack arrays. Outside a wasip1
// build, the package runs against an in-memory store (see Local), so
// handler logic can be unit-tested with go test.
package fn
