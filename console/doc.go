// Package console is lambdadb's web console: HTML pages that every node
// serves under /ui/ from its own binary.
//
// The pages are html/template files and static assets embedded with
// embed.FS: htmx 2 (partial page updates: a fragment is polled and swapped
// in, no page reload) and uPlot (charts), both vendored in static/ (see
// static/README.md), plus the console's own CSS and script. Nothing is
// loaded from elsewhere; every answer carries a Content-Security-Policy
// that allows only the node's own scripts and styles, so no inline script
// or style attribute runs. Static assets are served under /ui/static/ with
// a content hash in their URLs and a one-year immutable cache lifetime.
//
// Pages:
//
//   - /ui/ — the cluster: nodes, shards with each replica's applied index
//     and its lag behind the leader, moves in flight and red flags (a node
//     down, a shard with fewer replicas up than the replication factor, a
//     shard without a leader). /ui/cluster is its live part, polled every
//     2 s.
//   - /ui/keys?prefix=&start= — the key browser: a page of keys under a
//     prefix with their versions and value previews (JSON pretty-printed,
//     text, or hex), and a link to the next page.
//   - /ui/functions — the namespace's functions with their totals
//     (/ui/functions-live, polled every 3 s); /ui/functions/{name} — one
//     function's configuration, totals, per-node table and deploy
//     history (/ui/functions/{name}/live, polled), charts over time
//     (static/functions.js fetches /ui/functions/{name}/series, JSON)
//     and a live log tail (/ui/functions/{name}/logs/stream, server-sent
//     events). The numbers come from Config.Functions, which package
//     server implements with the code of its function routes.
//   - /ui/triggers — the namespace's triggers (Config.Triggers): status
//     per shard with lag and iterator age, the dead letters with Replay
//     and Drop buttons, Pause and Resume. /ui/triggers/live is its live
//     part, polled every 3 s; the buttons post to the patterns of
//     TriggerActions.
//   - /ui/query — a built-in aggregate run through Config.Query (POST
//     /v1/query's handler), with the result and its statistics per level
//     and per shard.
//
// The console reads the node through its Go API (shard.Node), never over
// HTTP to itself. Authentication and the cross-origin checks are the
// server's (package server mounts the handler behind the same middleware
// as the API): the key browser scans only the request's namespace
// (namespace.From) and asks Config.CanRead before reading a prefix.
package console
