// Command lambdadb is lambdadb's one binary: "lambdadb serve" runs a node,
// and the other subcommands are clients of a running node's HTTP API.
//
// "lambdadb query" runs one scatter/gather query (POST /v1/query): a
// built-in aggregate (--count, --sum, --min, --max, --avg, --topk, with
// --group-by) or a function's Leaf and Combine (--fn) over a key range on
// every shard; it prints the result as a value or a table on stdout and one
// line of statistics on stderr, or the JSON response with --json.
//
// "lambdadb node" manages membership: list the nodes and the replica
// moves in flight (--watch follows them), decommission and remove nodes,
// pause and resume rebalancing; "lambdadb serve --join" adds a node.
//
// Run "lambdadb help" for the subcommands and "lambdadb help CMD" for one
// subcommand's flags. Errors print "lambdadb: <message>" on stderr and exit
// with status 1; usage errors exit with status 2.
//
// Concurrency: run handles one command line; serve runs the node, its HTTP
// server and the Raft groups on their own goroutines until SIGINT or
// SIGTERM, then shuts the HTTP server down gracefully (in-flight requests
// finish, up to 10s) before closing the node.
package main
