package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"lambdadb/client"
)

// classify turns a client error into an outcome. rejected is a 412.
func classify(err error) (o Outcome, rejected bool) {
	if err == nil {
		return OK, false
	}
	if errors.Is(err, client.ErrPrecondition) {
		return OK, true
	}
	var ce *client.Error
	if errors.As(err, &ce) {
		if ce.Status >= 400 && ce.Status < 500 {
			return Fail, false // refused before anything was proposed
		}
		return Unknown, false // 5xx: 503 not_leader/unavailable, 504 timeout, 500
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return Fail, false // never sent
	}
	return Unknown, false // lost after sending, or timed out
}

// Workload drives the register clients and the session clients.
type Workload struct {
	Cluster  *Cluster
	History  *History
	Keys     []string // shared register keys
	Clients  int      // register clients
	Sessions int      // session clients
	Timeout  time.Duration
	Seed     uint64

	hc *http.Client

	mu         sync.Mutex
	violations []string
	sessionOps map[string]int // session op outcomes, by "read ok" etc.
}

// sessionKeysPer is the number of private keys each session client writes.
const sessionKeysPer = 4

func (w *Workload) violate(format string, args ...any) {
	w.mu.Lock()
	w.violations = append(w.violations, fmt.Sprintf(format, args...))
	w.mu.Unlock()
}

func (w *Workload) countSession(what string) {
	w.mu.Lock()
	w.sessionOps[what]++
	w.mu.Unlock()
}

// Violations returns the session-guarantee violations seen.
func (w *Workload) Violations() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.violations...)
}

// SessionOps returns session operation counts by kind and outcome.
func (w *Workload) SessionOps() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]int{}
	for k, v := range w.sessionOps {
		out[k] = v
	}
	return out
}

// AllKeys returns the shared keys and every session client's private keys.
func (w *Workload) AllKeys() []string {
	keys := append([]string(nil), w.Keys...)
	for s := 0; s < w.Sessions; s++ {
		for k := 0; k < sessionKeysPer; k++ {
			keys = append(keys, fmt.Sprintf("s/%d/%d", s, k))
		}
	}
	sort.Strings(keys)
	return keys
}

// Run runs the clients until ctx ends, then waits for the operations in
// flight (each bounded by Timeout).
func (w *Workload) Run(ctx context.Context) {
	if w.Timeout <= 0 {
		w.Timeout = 5 * time.Second
	}
	w.sessionOps = map[string]int{}
	w.hc = &http.Client{Transport: w.Cluster.Transport(&http.Transport{
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
		DialContext:         (&net.Dialer{Timeout: time.Second}).DialContext,
	})}
	defer w.hc.CloseIdleConnections()
	var wg sync.WaitGroup
	for i := 0; i < w.Clients; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); w.register(ctx, i) }()
	}
	for i := 0; i < w.Sessions; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); w.session(ctx, i) }()
	}
	wg.Wait()
}

// pickNode returns a random running member, avoiding avoid when it can.
// Clients know which nodes the nemesis killed or paused, which joined and
// which left (as a load balancer's health check would), so few requests
// wait on a frozen node and none goes to a node that left.
func (w *Workload) pickNode(rng *rand.Rand, avoid string) *Proc {
	running := w.Cluster.Running()
	var up []*Proc
	for _, p := range running {
		if p.ID != avoid {
			up = append(up, p)
		}
	}
	if len(up) == 0 {
		up = running
	}
	if len(up) == 0 {
		return nil
	}
	return up[rng.IntN(len(up))]
}

func (w *Workload) client(p *Proc, token string) *client.Client {
	c, err := w.Cluster.Client(p, w.hc, client.WithToken(token))
	if err != nil {
		panic(err) // our own URL and token
	}
	return c
}

// do runs one register operation against p and records it.
func (w *Workload) do(ctx context.Context, c *client.Client, op Op) Op {
	octx, cancel := context.WithTimeout(ctx, w.Timeout)
	defer cancel()
	op.Call = w.History.Now()
	var err error
	switch op.Kind {
	case Get:
		var it client.Item
		it, op.Found, err = c.Get(octx, op.Key, client.WithConsistency(client.Linearizable))
		op.Got, op.Version = string(it.Value), it.Version
	case Put:
		op.Version, err = c.Put(octx, op.Key, []byte(op.Value))
	case CAS:
		op.Version, err = c.Put(octx, op.Key, []byte(op.Value), client.IfMatch(op.Expect))
	case Create:
		op.Version, err = c.Put(octx, op.Key, []byte(op.Value), client.IfNoneMatch())
	case Delete:
		var opts []client.WriteOption
		if op.Expect > 0 {
			opts = append(opts, client.IfMatch(op.Expect))
		}
		op.Deleted, err = c.Delete(octx, op.Key, opts...)
	}
	op.Return = w.History.Now()
	op.Outcome, op.Rejected = classify(err)
	if op.Kind == Get && op.Outcome != OK {
		op.Outcome = Fail
		if !isDialError(err) {
			op.Outcome = Unknown
		}
	}
	if op.Outcome != OK || op.Rejected {
		op.Version, op.Found, op.Got, op.Deleted = 0, false, "", false
	}
	if err != nil && !op.Rejected {
		op.Err, op.ErrClass = err.Error(), errClass(err)
	}
	w.History.Add(op)
	return op
}

// scanOp scans keys [Keys[i], Keys[i+n]) linearizably through c and
// records one Scan read per key in the range, all with the scan's call and
// return (a scan reads each shard at one moment inside its interval, so
// each key's part is a linearizable read). A failed scan is recorded once,
// under its first key, and checks nothing.
func (w *Workload) scanOp(ctx context.Context, c *client.Client, cid int, node string, i, n int) {
	start := w.Keys[i]
	end := ""
	if i+n < len(w.Keys) {
		end = w.Keys[i+n]
	}
	octx, cancel := context.WithTimeout(ctx, w.Timeout)
	defer cancel()
	call := w.History.Now()
	page, err := c.Scan(octx, "r/", client.ScanOptions{Start: start, End: end, Limit: 2 * n, Consistency: client.Linearizable})
	ret := w.History.Now()
	if err == nil && page.More {
		err = fmt.Errorf("chaos: scan of %d keys returned more than %d", n, 2*n)
	}
	if err != nil {
		op := Op{Client: cid, Kind: Scan, Key: start, Node: node, Call: call, Return: ret, Outcome: Unknown,
			Err: err.Error(), ErrClass: errClass(err)}
		if isDialError(err) {
			op.Outcome = Fail
		}
		w.History.Add(op)
		return
	}
	got := map[string]client.Item{}
	for _, it := range page.Items {
		got[it.Key] = it
	}
	for _, k := range w.Keys[i:min(i+n, len(w.Keys))] {
		it, found := got[k]
		w.History.Add(Op{Client: cid, Kind: Scan, Key: k, Node: node, Call: call, Return: ret,
			Found: found, Got: string(it.Value), Version: it.Version})
	}
}

// errClass names an error briefly for the report.
func errClass(err error) string {
	var ce *client.Error
	var ne net.Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &ce):
		if ce.Code == "" {
			return fmt.Sprintf("%d", ce.Status)
		}
		return fmt.Sprintf("%d %s", ce.Status, ce.Code)
	case isDialError(err):
		return "connection refused"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "client timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "connection lost"
}

func isDialError(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// register is one register client: random keys, random nodes, a mix of
// linearizable reads, puts, compare-and-sets, creates and deletes. It
// remembers the last version it saw of each key to use in If-Match.
func (w *Workload) register(ctx context.Context, id int) {
	rng := rand.New(rand.NewPCG(w.Seed, uint64(id)+1))
	seen := map[string]uint64{}
	for seq := 0; ctx.Err() == nil; seq++ {
		p := w.pickNode(rng, "")
		if p == nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if rng.IntN(100) < 5 {
			w.scanOp(ctx, w.client(p, ""), id, p.ID, rng.IntN(len(w.Keys)), 8)
			continue
		}
		key := w.Keys[rng.IntN(len(w.Keys))]
		op := Op{Client: id, Key: key, Node: p.ID, Value: fmt.Sprintf("c%d.%d", id, seq)}
		r := rng.IntN(100)
		switch {
		case r < 40:
			op.Kind = Get
		case r < 62:
			op.Kind = Put
		case r < 84:
			op.Kind, op.Expect = CAS, seen[key]
			if op.Expect == 0 {
				op.Kind = Get
			}
		case r < 90:
			op.Kind = Create
		case r < 96:
			op.Kind = Delete
		default:
			op.Kind, op.Expect = Delete, seen[key]
		}
		if op.Kind == Get || op.Kind == Delete {
			op.Value = ""
		}
		op = w.do(ctx, w.client(p, ""), op)
		switch {
		case op.Outcome != OK:
		case op.Kind == Get && op.Found, op.Kind != Get && op.Kind != Delete && !op.Rejected:
			seen[key] = op.Version
		case op.Kind == Get || op.Kind == Delete && !op.Rejected:
			delete(seen, key)
		}
	}
}

// privState is what a session client knows of one of its private keys
// (keys no one else writes).
type privState struct {
	present bool
	value   string
	ver     uint64 // version of value, or the last version seen before a delete
	// Writes whose outcome is unknown may take effect at any later time,
	// so a read may return any of them (with a version no older than the
	// one it replaces).
	unknownPuts map[string]bool
	unknownDel  bool
}

// session is one session client: it keeps one session token and sends each
// request to a different node than the last. It checks read-your-writes
// and monotonic reads on its private keys, and monotonic reads on shared
// keys.
func (w *Workload) session(ctx context.Context, id int) {
	rng := rand.New(rand.NewPCG(w.Seed, uint64(1000+id)))
	name := fmt.Sprintf("session %d", id)
	var tok, last string
	priv := map[string]*privState{}
	var keys []string
	for k := 0; k < sessionKeysPer; k++ {
		key := fmt.Sprintf("s/%d/%d", id, k)
		keys = append(keys, key)
		priv[key] = &privState{unknownPuts: map[string]bool{}}
	}
	maxSeen := map[string]uint64{} // highest version read, any key
	cid := 2000 + id               // client id in the history
	for seq := 0; ctx.Err() == nil; seq++ {
		p := w.pickNode(rng, last)
		if p == nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		last = p.ID
		c := w.client(p, tok)
		r := rng.IntN(100)
		switch {
		case r < 35: // write a private key; recorded in the register history too
			key := keys[rng.IntN(len(keys))]
			st := priv[key]
			op := Op{Client: cid, Kind: Put, Key: key, Node: p.ID, Value: fmt.Sprintf("s%d.%d", id, seq)}
			if rng.IntN(10) == 0 {
				op.Kind, op.Value = Delete, ""
			}
			op = w.do(ctx, c, op)
			w.countSession(op.Kind.String() + " " + op.Outcome.String())
			switch {
			case op.Outcome == OK && op.Kind == Put:
				st.present, st.value, st.ver = true, op.Value, op.Version
				maxSeen[key] = max(maxSeen[key], op.Version)
			case op.Outcome == OK:
				st.present, st.value = false, ""
			case op.Outcome == Unknown && op.Kind == Put:
				st.unknownPuts[op.Value] = true
			case op.Outcome == Unknown:
				st.unknownDel = true
			}
		case r < 70: // session read of a private key
			key := keys[rng.IntN(len(keys))]
			it, found, err := w.sessionGet(ctx, c, key)
			if err != nil {
				w.countSession("read error")
				break
			}
			w.countSession("read ok")
			w.checkPrivate(priv[key], maxSeen, fmt.Sprintf("%s: read %s via %s", name, key, p.ID), key, found, it)
		case r < 80: // session scan of all private keys (shards read one by one)
			sctx, cancel := context.WithTimeout(ctx, w.Timeout)
			page, err := c.Scan(sctx, fmt.Sprintf("s/%d/", id), client.ScanOptions{Consistency: client.Session})
			cancel()
			if err != nil {
				w.countSession("scan error")
				break
			}
			w.countSession("scan ok")
			got := map[string]client.Item{}
			for _, it := range page.Items {
				got[it.Key] = it
			}
			for _, key := range keys {
				it, found := got[key]
				w.checkPrivate(priv[key], maxSeen, fmt.Sprintf("%s: scan of %s via %s", name, key, p.ID), key, found, it)
			}
		default: // session read of a shared key: versions never go back
			key := w.Keys[rng.IntN(len(w.Keys))]
			it, found, err := w.sessionGet(ctx, c, key)
			if err != nil {
				w.countSession("read error")
				break
			}
			w.countSession("read ok")
			if found {
				if it.Version < maxSeen[key] {
					w.violate("%s: read %s via %s returned version %d, older than version %d seen before (monotonic reads)",
						name, key, p.ID, it.Version, maxSeen[key])
				}
				maxSeen[key] = max(maxSeen[key], it.Version)
			}
		}
		tok = c.Token()
	}
}

// checkPrivate checks a session read of one of its private keys: it must
// return the session's last acknowledged write, or a write of unknown
// outcome no older than that; absent only when the last acknowledged write
// was a delete (or a delete of unknown outcome may have run); and versions
// never go back (monotonic reads).
func (w *Workload) checkPrivate(st *privState, maxSeen map[string]uint64, desc, key string, found bool, it client.Item) {
	switch {
	case found && it.Version < maxSeen[key]:
		w.violate("%s returned %s@%d, older than version %d seen before (monotonic reads)", desc, it.Value, it.Version, maxSeen[key])
	case !found && !st.present:
		// Never written, or deleted: absent is right.
	case !found && st.unknownDel:
		st.present, st.value = false, ""
	case !found:
		w.violate("%s found it absent, but it holds %s@%d (read your writes)", desc, st.value, st.ver)
	case st.present && string(it.Value) == st.value && it.Version == st.ver:
	case st.unknownPuts[string(it.Value)] && it.Version >= st.ver:
		st.present, st.value, st.ver = true, string(it.Value), it.Version
		delete(st.unknownPuts, string(it.Value))
	case st.present:
		w.violate("%s returned %s@%d, want %s@%d (read your writes)", desc, it.Value, it.Version, st.value, st.ver)
	default:
		w.violate("%s returned %s@%d, but it was deleted (read your writes)", desc, it.Value, it.Version)
	}
	if found {
		maxSeen[key] = max(maxSeen[key], it.Version)
	}
}

func (w *Workload) sessionGet(ctx context.Context, c *client.Client, key string) (client.Item, bool, error) {
	octx, cancel := context.WithTimeout(ctx, w.Timeout)
	defer cancel()
	return c.Get(octx, key, client.WithConsistency(client.Session))
}
