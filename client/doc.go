// Package client is the Go client of lambdadb's HTTP API.
//
//	c, err := client.New("http://127.0.0.1:7070")
//	version, err := c.Put(ctx, "greeting", []byte("hello"))
//	item, found, err := c.Get(ctx, "greeting")
//
// # Sessions
//
// A Client is one session: it merges the X-Session token of every response
// it receives and sends the merged token with every request, so each read
// observes every write the Client made or saw before (read-after-write),
// whichever node serves it. Reads without a consistency option are session
// reads once the Client holds a token, linearizable before. Token and
// WithToken carry a session from one Client (or process) to another;
// WithSession makes a Client for another session that shares the
// routing, for a server acting for many users.
//
// # Routing
//
// Put, Get and Delete go straight to the node that leads the key's shard,
// so the node the Client was created for does not forward them. The
// Client learns the placement from GET /v1/cluster in the background on
// first use (and every 30 s while in use), follows the X-Shard-Leader
// header of each keyed response when leadership moves, and sends a request
// to its base URL whenever it does not know the leader or cannot connect
// to it — and, if it cannot connect to the base node either, to the other
// nodes it knows, so keyed requests survive the loss of the base node.
// Invoke with WithKey routes the same way, to the node that runs the
// call. Other requests go to the base URL — and, when it cannot be
// reached (the request was not sent), to the other nodes the Client
// knows. WithoutRouting turns
// this off; a base URL with a path (a proxy) never routes. Routing needs
// the nodes' advertised addresses (serve --addr) to be reachable from the
// client.
//
// # Overload
//
// A node at its admission limits answers 503 with code "overloaded" and
// Retry-After: the request did not run there. The Client sends such a
// request again after Retry-After (at most 5 s, within the context), up to
// three times, then returns the *Error. Other 503s (a shard without a
// leader, a write whose outcome is unknown) are returned at once.
//
// # Errors
//
// Failed requests return a *Error with the HTTP status and the API's error
// code; errors.Is(err, ErrNotFound) and errors.Is(err, ErrPrecondition)
// test the common cases. A Get of an absent key is not an error: it reports
// found == false.
//
// An incomplete query (Client.Query: some shards could not be read) is an
// *Error with Code "incomplete" that names them in MissingShards; a query
// never returns a partial answer.
//
// # Keys
//
// Keys are arbitrary UTF-8 strings of 1–1024 bytes and may contain "/".
// They are percent-escaped per path segment; segments that HTTP path
// cleaning would rewrite (empty, ".", "..") are escaped so the server sees
// the key exactly.
//
// # Concurrency
//
// A Client is safe for concurrent use by multiple goroutines; all of them
// share its session. Use one Client per independent session; Clients may
// share an *http.Client (WithHTTPClient).
package client
