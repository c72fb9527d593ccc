package clustertest

import (
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"lambdadb/pki"
	"lambdadb/shard"
)

// Options configure a cluster. Zero values select the defaults in comments.
type Options struct {
	Nodes  int // default 3
	Shards int // default 4
	// StartLater names initial members Start leaves stopped (start them
	// with Restart): initial nodes that come up late.
	StartLater []string
	// LogRetainEntries is shard.Config.LogRetainEntries. Default: shard's.
	LogRetainEntries uint64
	// WrapFS, when set, wraps the filesystem member id's node opens — for
	// example with pebble's errorfs to inject disk latency or errors.
	// Kill still crash-clones the underlying in-memory filesystem.
	WrapFS func(id string, fs vfs.FS) vfs.FS
	// Handler, when set, wraps each member's node into a public HTTP handler
	// served on the member's address (for tests of the HTTP layer).
	Handler func(*shard.Node) (http.Handler, error)
	// Configure, when set, may change member id's node Config before each
	// Open (at start and on Restart) — for example to set StatusInfo.
	Configure func(id string, cfg *shard.Config)
	// Secret, when set, runs the cluster in secure mode: the contents of
	// every member's cluster secret file (serve --cluster-secret-file; one
	// secret per line, the first current). Members speak TLS 1.3 to each
	// other with node certificates derived from it, and Handler is served
	// over HTTPS.
	Secret []byte
	// SecretOf, when set, overrides Secret for member id; it is asked at
	// every start (Start, Restart, Join), so a test can change a member's
	// secret across a restart. A nil answer means insecure.
	SecretOf func(id string) []byte
}

// Member is one node of the cluster.
type Member struct {
	ID   string
	Addr string
	FS   *vfs.MemFS
	join string // the address it joined through; "" for initial members

	node atomic.Pointer[shard.Node] // nil while killed

	mux  *shard.Mux
	http *http.Server
	tls  atomic.Pointer[pki.Set]
}

// TLS returns the security material the member last started with, nil
// when it runs insecure.
func (m *Member) TLS() *pki.Set { return m.tls.Load() }

// Node returns the member's running node, or nil while it is killed.
func (m *Member) Node() *shard.Node { return m.node.Load() }

// Cluster is a set of in-process members.
type Cluster struct {
	t       testing.TB
	opts    Options
	peers   []shard.Peer
	mu      sync.RWMutex // guards Members against Join while others read it
	Members []*Member
	Faults  *shard.Faults
}

// Start starts a cluster and waits until every shard has a leader.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Shards == 0 {
		opts.Shards = 4
	}
	c := &Cluster{t: t, opts: opts, Faults: &shard.Faults{}}
	var lns []net.Listener
	for i := 0; i < opts.Nodes; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		id := fmt.Sprintf("n%d", i+1)
		c.peers = append(c.peers, shard.Peer{ID: id, Addr: ln.Addr().String()})
		c.Members = append(c.Members, &Member{ID: id, Addr: ln.Addr().String(), FS: vfs.NewCrashableMem()})
	}
	t.Cleanup(c.Close)
	errs := make(chan error, opts.Nodes)
	for i, m := range c.Members {
		if slices.Contains(opts.StartLater, m.ID) {
			lns[i].Close()
			errs <- nil
			continue
		}
		go func() { errs <- c.start(m, lns[i]) }()
	}
	for range c.Members {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if len(opts.StartLater) == 0 {
		c.WaitLeaders(30 * time.Second)
	}
	return c
}

// IDs returns every member's id.
func (c *Cluster) IDs() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var ids []string
	for _, m := range c.Members {
		ids = append(ids, m.ID)
	}
	return ids
}

// secretOf returns member id's secret file contents (nil: insecure).
func (c *Cluster) secretOf(id string) []byte {
	if c.opts.SecretOf != nil {
		return c.opts.SecretOf(id)
	}
	return c.opts.Secret
}

func (c *Cluster) start(m *Member, ln net.Listener) error {
	mc := shard.MuxConfig{NodeID: m.ID, Faults: c.Faults}
	if secret := c.secretOf(m.ID); secret != nil {
		secrets, err := pki.ParseSecrets(secret)
		if err != nil {
			return fmt.Errorf("clustertest: %s: %w", m.ID, err)
		}
		host, _, _ := net.SplitHostPort(m.Addr)
		if mc.TLS, err = pki.FromSecrets(secrets, m.ID, []string{host}); err != nil {
			return fmt.Errorf("clustertest: %s: %w", m.ID, err)
		}
	}
	m.tls.Store(mc.TLS)
	mux, err := shard.NewMux(ln, mc)
	if err != nil {
		return err
	}
	go mux.Serve()
	var fs vfs.FS = m.FS
	if c.opts.WrapFS != nil {
		fs = c.opts.WrapFS(m.ID, fs)
	}
	cfg := shard.Config{
		ID: m.ID, Addr: m.Addr, Dir: "/data", FS: fs,
		Shards: c.opts.Shards, Peers: c.peers, Mux: mux,
		LogRetainEntries: c.opts.LogRetainEntries,
	}
	if m.join != "" {
		cfg.Peers, cfg.Join, cfg.Shards = nil, m.join, 0
	}
	if c.opts.Configure != nil {
		c.opts.Configure(m.ID, &cfg)
	}
	n, err := shard.Open(cfg)
	if err != nil {
		mux.Close()
		return fmt.Errorf("clustertest: open %s: %w", m.ID, err)
	}
	m.node.Store(n)
	m.mux = mux
	if c.opts.Handler != nil {
		h, err := c.opts.Handler(n)
		if err != nil {
			return err
		}
		m.http = &http.Server{Handler: h}
		go m.http.Serve(mux.PublicListener())
	}
	return nil
}

// Join starts a new member id with an empty data directory that joins
// the cluster through a running member (serve --join), and returns it.
func (c *Cluster) Join(id string) *Member {
	c.t.Helper()
	m, err := c.JoinErr(id)
	if err != nil {
		c.t.Fatal(err)
	}
	return m
}

// JoinErr is Join returning the node's start error; a member that failed
// to start is not added.
func (c *Cluster) JoinErr(id string) (*Member, error) {
	run := c.Running()
	if len(run) == 0 {
		return nil, fmt.Errorf("clustertest: no running member to join through")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	m := &Member{ID: id, Addr: ln.Addr().String(), FS: vfs.NewCrashableMem(), join: run[0].Addr}
	if err := c.start(m, ln); err != nil {
		ln.Close()
		return nil, err
	}
	c.mu.Lock()
	c.Members = append(c.Members, m)
	c.mu.Unlock()
	return m, nil
}

// Wipe replaces stopped member id's filesystem with an empty one, as after
// a lost disk.
func (c *Cluster) Wipe(id string) {
	m := c.Member(id)
	if m.Node() != nil {
		c.t.Fatalf("clustertest: %s is running", id)
	}
	m.FS = vfs.NewCrashableMem()
}

// Member returns the member with id.
func (c *Cluster) Member(id string) *Member {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, m := range c.Members {
		if m.ID == id {
			return m
		}
	}
	c.t.Fatalf("clustertest: no member %s", id)
	return nil
}

// Kill crashes member id: its filesystem keeps only what was synced, and
// the node stops without a clean shutdown of its state.
func (c *Cluster) Kill(id string) {
	m := c.Member(id)
	n := m.node.Swap(nil)
	if n == nil {
		return
	}
	// Nothing may leave the node after the capture: an acknowledgement
	// of data the capture lacks is something a real crash never sends.
	n.HaltRaft()
	crashed := m.FS.CrashClone(vfs.CrashCloneCfg{})
	m.mux.Close()
	if m.http != nil {
		m.http.Close()
	}
	n.Close()
	m.FS = crashed
}

// Restart brings a killed member back with the same flags.
func (c *Cluster) Restart(id string) {
	c.t.Helper()
	if err := c.RestartErr(id); err != nil {
		c.t.Fatal(err)
	}
}

// RestartErr is Restart returning the node's start error.
func (c *Cluster) RestartErr(id string) error {
	m := c.Member(id)
	if m.Node() != nil {
		return fmt.Errorf("clustertest: %s is running", id)
	}
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the old listener's port may linger briefly
		if ln, err = net.Listen("tcp", m.Addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("clustertest: relisten %s: %v", m.Addr, err)
	}
	if err := c.start(m, ln); err != nil {
		ln.Close()
		return err
	}
	return nil
}

// Close stops every member.
func (c *Cluster) Close() {
	c.mu.RLock()
	members := append([]*Member(nil), c.Members...)
	c.mu.RUnlock()
	for _, m := range members {
		if n := m.node.Swap(nil); n != nil {
			if m.http != nil {
				m.http.Close()
			}
			n.Close()
			m.mux.Close()
		}
	}
}

// Running returns the members that are up.
func (c *Cluster) Running() []*Member {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []*Member
	for _, m := range c.Members {
		if m.Node() != nil {
			out = append(out, m)
		}
	}
	return out
}

// LeaderOf returns the running member leading shard s, or nil.
func (c *Cluster) LeaderOf(s int) *Member {
	for _, m := range c.Running() {
		if m.Node().Leads(s) {
			return m
		}
	}
	return nil
}

// WaitLeaders waits until every shard has a leader among running members.
func (c *Cluster) WaitLeaders(timeout time.Duration) {
	c.t.Helper()
	c.Eventually(timeout, "every shard has a leader", func() bool {
		for s := 0; s < c.opts.Shards; s++ {
			if c.LeaderOf(s) == nil {
				return false
			}
		}
		return true
	})
}

// MostLeader returns the running member that leads the most shards.
func (c *Cluster) MostLeader() *Member {
	var best *Member
	bestN := -1
	for _, m := range c.Running() {
		k := 0
		for s := 0; s < c.opts.Shards; s++ {
			if m.Node().Leads(s) {
				k++
			}
		}
		if k > bestN {
			best, bestN = m, k
		}
	}
	return best
}

// Eventually polls cond until it holds, failing the test after timeout.
func (c *Cluster) Eventually(timeout time.Duration, what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("clustertest: timed out after %v waiting until %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
