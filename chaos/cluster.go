package chaos

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"lambdadb/internal/loopback"
	"lambdadb/shard"
)

// NodeState is what the harness did to a node last.
type NodeState int

// Node states.
const (
	Running NodeState = iota
	Killed            // SIGKILL, not yet restarted
	Paused            // SIGSTOP, not yet continued
	// Retired: decommissioned or removed, its process stopped for good.
	// No fault, heal or workload touches it again.
	Retired
	// Starting: a joining node's process runs but does not answer yet.
	Starting
)

// Proc is one `lambdadb serve` process the harness controls. Its methods
// are safe for concurrent use.
type Proc struct {
	ID     string
	Addr   string
	scheme string // "http", or "https" in secure mode
	args   []string
	bin    string
	logf   *os.File

	mu    sync.Mutex
	cmd   *exec.Cmd
	state NodeState
	done  chan struct{} // closed when cmd exits
}

// URL is the node's base URL (https:// in secure mode).
func (p *Proc) URL() string { return p.scheme + "://" + p.Addr }

// State returns the node's state.
func (p *Proc) State() NodeState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state
}

func (p *Proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.startLocked()
}

func (p *Proc) startLocked() error {
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = p.logf, p.logf
	cmd.SysProcAttr = procAttr()
	fmt.Fprintf(p.logf, "=== chaos: start %s %s\n", p.bin, strings.Join(p.args, " "))
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("chaos: start %s: %w", p.ID, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	p.cmd, p.done, p.state = cmd, done, Running
	return nil
}

// Kill sends SIGKILL (after SIGCONT is not needed: a stopped process dies
// too) and waits for the process to exit.
func (p *Proc) Kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.state == Killed || p.state == Retired {
		return
	}
	fmt.Fprintf(p.logf, "=== chaos: kill -9\n")
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.state = Killed
}

// Restart starts a killed node again with the same flags (a retired one
// stays down).
func (p *Proc) Restart() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != Killed {
		return nil
	}
	return p.startLocked()
}

// Pause sends SIGSTOP.
func (p *Proc) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != Running {
		return
	}
	fmt.Fprintf(p.logf, "=== chaos: SIGSTOP\n")
	_ = p.cmd.Process.Signal(syscall.SIGSTOP)
	p.state = Paused
}

// Resume sends SIGCONT to a paused node.
func (p *Proc) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != Paused {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	fmt.Fprintf(p.logf, "=== chaos: SIGCONT\n")
	p.state = Running
}

// exited reports whether the process has exited (by itself or killed).
func (p *Proc) exited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return true
	}
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the process: SIGCONT and SIGTERM, then SIGKILL after 10s.
func (p *Proc) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopLocked()
	if p.state != Retired {
		p.state = Killed
	}
}

func (p *Proc) stopLocked() {
	if p.cmd == nil || p.state == Killed || p.state == Retired {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

// retire stops the process for good (kill -9 when kill is set, else
// SIGTERM): the node was decommissioned or is being removed. Restart,
// Pause and Resume do nothing on it afterwards.
func (p *Proc) retire(why string, kill bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == Retired {
		return
	}
	fmt.Fprintf(p.logf, "=== chaos: retire (%s)\n", why)
	if kill && p.cmd != nil && p.state != Killed {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
	p.stopLocked()
	p.state = Retired
}

// Cluster is a set of lambdadb processes on 127.0.0.1. Its membership
// changes during a run: nodes join (Join) and leave (Retire); Members,
// Running and IDs give the current members, safe for concurrent use.
type Cluster struct {
	Shards int
	dir    string
	bin    string
	hc     *http.Client

	// Secure mode: every node runs with --cluster-secret-file secret;
	// requests go over TLS trusting tlsConf's CA and carry the admin
	// token. Zero in insecure mode.
	secret  string
	tlsConf *tls.Config
	token   string
	shared  http.RoundTripper // HTTPClient's transport (nil: Go's default)

	mu     sync.Mutex
	procs  []*Proc           // every process ever started, in start order
	rules  []shard.FaultRule // in force on every running node
	nextID int               // number of the next node to join
}

// ClusterConfig configures StartCluster.
type ClusterConfig struct {
	Bin    string // path to the lambdadb binary
	Dir    string // data directories and logs go here
	Nodes  int    // default 3
	Shards int    // default 16
	// Secure runs the nodes in secure mode: a random cluster secret
	// (Dir/cluster.secret), TLS, and the admin token the harness
	// bootstraps on every request.
	Secure bool
}

// StartCluster starts the nodes with --unsafe-fault-injection and waits
// until every node is up and every shard has a leader.
func StartCluster(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	if cfg.Nodes == 0 {
		cfg.Nodes = 3
	}
	if cfg.Shards == 0 {
		cfg.Shards = 16
	}
	bin, err := filepath.Abs(cfg.Bin)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("chaos: binary: %w (run make build)", err)
	}
	addrs, err := loopback.FreeAddrs(cfg.Nodes)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Shards: cfg.Shards, dir: cfg.Dir, bin: bin, hc: &http.Client{Timeout: 5 * time.Second}, nextID: cfg.Nodes + 1}
	if cfg.Secure {
		if c.secret, err = writeSecret(cfg.Dir); err != nil {
			return nil, err
		}
	}
	var peers []string
	for i, a := range addrs {
		peers = append(peers, fmt.Sprintf("n%d=%s", i+1, a))
	}
	for i, a := range addrs {
		id := fmt.Sprintf("n%d", i+1)
		p, err := c.newProc(id, a, "--peers", strings.Join(peers, ","), "--shards", fmt.Sprint(cfg.Shards))
		if err != nil {
			c.Stop()
			return nil, err
		}
		if err := p.start(); err != nil {
			c.Stop()
			return nil, err
		}
		c.procs = append(c.procs, p)
	}
	if cfg.Secure {
		if err := c.secure(ctx, 60*time.Second); err != nil {
			c.Stop()
			return nil, err
		}
	}
	if err := c.WaitHealthy(ctx, 60*time.Second); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// newProc prepares (does not start) node id at addr with its own data
// directory and log; extra are its cluster flags (--peers or --join).
func (c *Cluster) newProc(id, addr string, extra ...string) (*Proc, error) {
	logf, err := os.OpenFile(filepath.Join(c.dir, id+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	args := []string{"serve", "--id", id, "--addr", addr, "--data", filepath.Join(c.dir, id)}
	args = append(args, extra...)
	args = append(args, "--unsafe-fault-injection")
	scheme := "http"
	if c.secret != "" {
		// The nodes' default token cache: a node cut off from the shard
		// holding the token records keeps accepting the admin token it
		// knew (for up to an hour), so /debug/faults can heal it.
		args = append(args, "--cluster-secret-file", c.secret)
		scheme = "https"
	}
	return &Proc{ID: id, Addr: addr, scheme: scheme, bin: c.bin, logf: logf, args: args}, nil
}

// Stop ends every process.
func (c *Cluster) Stop() {
	c.mu.Lock()
	procs := append([]*Proc(nil), c.procs...)
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() { defer wg.Done(); p.stop(); p.logf.Close() }()
	}
	wg.Wait()
}

// Proc returns the node with id (a retired one too).
func (c *Cluster) Proc(id string) *Proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		if p.ID == id {
			return p
		}
	}
	return nil
}

// Members returns the current members: every node started or joined and
// not retired, whatever the nemesis is doing to it, in start order.
func (c *Cluster) Members() []*Proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Proc
	for _, p := range c.procs {
		if p.State() != Retired {
			out = append(out, p)
		}
	}
	return out
}

// Running returns the members that are running (not killed or paused).
func (c *Cluster) Running() []*Proc {
	var out []*Proc
	for _, p := range c.Members() {
		if p.State() == Running {
			out = append(out, p)
		}
	}
	return out
}

// Retired returns the nodes that left the cluster (decommissioned or
// removed).
func (c *Cluster) Retired() []*Proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Proc
	for _, p := range c.procs {
		if p.State() == Retired {
			out = append(out, p)
		}
	}
	return out
}

// IDs lists the current members' ids.
func (c *Cluster) IDs() []string {
	var ids []string
	for _, p := range c.Members() {
		ids = append(ids, p.ID)
	}
	return ids
}

// Status asks node p for /v1/cluster.
func (c *Cluster) Status(ctx context.Context, p *Proc) (shard.ClusterStatus, error) {
	var st shard.ClusterStatus
	err := c.getJSON(ctx, p, "/v1/cluster", &st)
	return st, err
}

// getJSON GETs path from p and decodes the JSON answer into out.
func (c *Cluster) getJSON(ctx context.Context, p *Proc, path string, out any) error {
	req, err := c.newRequest(ctx, http.MethodGet, p, path, nil)
	if err != nil {
		return err
	}
	res, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: status %d: %s", p.ID, path, res.StatusCode, bytes.TrimSpace(b))
	}
	return json.Unmarshal(b, out)
}

// Leaders counts the shards each node leads, as the first running node
// that answers sees it.
func (c *Cluster) Leaders(ctx context.Context) (map[string]int, error) {
	var last error
	for _, p := range c.Running() {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := c.Status(ctx, p)
		cancel()
		if err != nil {
			last = err
			continue
		}
		led := map[string]int{}
		for _, s := range st.Shards {
			if s.Leader != "" {
				led[s.Leader]++
			}
		}
		return led, nil
	}
	return nil, fmt.Errorf("chaos: no node answered /v1/cluster: %v", last)
}

// WaitHealthy waits until every node answers, sees every node up, and
// knows a leader for every shard.
func (c *Cluster) WaitHealthy(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	var last error
	for {
		last = c.healthy(ctx)
		if last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("chaos: cluster not healthy after %v: %w", d, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *Cluster) healthy(ctx context.Context) error {
	for _, p := range c.Members() {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := c.Status(ctx, p)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w", p.ID, err)
		}
		for _, n := range st.Nodes {
			if gone(n.State) {
				continue // left the cluster: its process is stopped
			}
			if !n.Up {
				return fmt.Errorf("%s sees %s down", p.ID, n.ID)
			}
		}
		for _, s := range st.Shards {
			if s.Leader == "" {
				return fmt.Errorf("%s knows no leader of shard %d", p.ID, s.ID)
			}
		}
	}
	return nil
}

// SetFaults replaces the fault rules on every running node. Rules are
// directed and each node applies them on its own side, so every node gets
// the whole set.
func (c *Cluster) SetFaults(ctx context.Context, rules []shard.FaultRule) error {
	if rules == nil {
		rules = []shard.FaultRule{}
	}
	c.mu.Lock()
	c.rules = rules
	c.mu.Unlock()
	body, err := json.Marshal(rules)
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range c.Running() {
		if err := c.putFaults(ctx, p, body); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Restart starts a killed node again and, once it answers, gives it the
// fault rules in force (the other nodes already drop its traffic on their
// side).
func (c *Cluster) Restart(ctx context.Context, p *Proc) error {
	if err := p.Restart(); err != nil {
		return err
	}
	return c.giveRules(ctx, p)
}

// giveRules gives node p, just started, the fault rules in force once it
// answers.
func (c *Cluster) giveRules(ctx context.Context, p *Proc) error {
	c.mu.Lock()
	rules := c.rules
	c.mu.Unlock()
	if len(rules) == 0 || p.State() != Running {
		return nil
	}
	body, err := json.Marshal(rules)
	if err != nil {
		return err
	}
	if c.Secure() {
		// The node, just started, knows no token yet: it must read the
		// admin token's record from the auth shard, which the rules in
		// force may cut it off from. Give up early rather than hold up
		// the heals that follow (the other nodes enforce the rules on
		// their side meanwhile).
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
	}
	return c.putFaultsRetry(ctx, p, body, 100)
}

func (c *Cluster) putFaults(ctx context.Context, p *Proc, body []byte) error {
	return c.putFaultsRetry(ctx, p, body, 5)
}

func (c *Cluster) putFaultsRetry(ctx context.Context, p *Proc, body []byte, attempts int) error {
	var last error
	for attempt := 0; attempt < attempts; attempt++ {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		req, _ := c.newRequest(ctx, http.MethodPut, p, "/debug/faults", bytes.NewReader(body))
		res, err := c.hc.Do(req)
		if err == nil {
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				cancel()
				return nil
			}
			err = fmt.Errorf("status %d: %s", res.StatusCode, b)
		}
		cancel()
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("chaos: set faults on %s: %w", p.ID, last)
}
