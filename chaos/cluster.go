package chaos

import (
	"bytes"
	"context"
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

	"lambdadb/client"
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
)

// Proc is one `lambdadb serve` process the harness controls. Its methods
// are safe for concurrent use.
type Proc struct {
	ID   string
	Addr string
	args []string
	bin  string
	logf *os.File

	mu    sync.Mutex
	cmd   *exec.Cmd
	state NodeState
	done  chan struct{} // closed when cmd exits
}

// URL is the node's base URL.
func (p *Proc) URL() string { return "http://" + p.Addr }

// State returns the node's state.
func (p *Proc) State() NodeState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state
}

func (p *Proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
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
	if p.cmd == nil || p.state == Killed {
		return
	}
	fmt.Fprintf(p.logf, "=== chaos: kill -9\n")
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.state = Killed
}

// Restart starts a killed node again with the same flags.
func (p *Proc) Restart() error {
	if p.State() != Killed {
		return nil
	}
	return p.start()
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

// stop ends the process: SIGCONT and SIGTERM, then SIGKILL after 10s.
func (p *Proc) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.state == Killed {
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
	p.state = Killed
}

// Cluster is a set of lambdadb processes on 127.0.0.1.
type Cluster struct {
	Procs  []*Proc
	Shards int
	dir    string
	hc     *http.Client

	mu    sync.Mutex
	rules []shard.FaultRule // in force on every running node
}

// ClusterConfig configures StartCluster.
type ClusterConfig struct {
	Bin    string // path to the lambdadb binary
	Dir    string // data directories and logs go here
	Nodes  int    // default 3
	Shards int    // default 16
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
	c := &Cluster{Shards: cfg.Shards, dir: cfg.Dir, hc: &http.Client{Timeout: 5 * time.Second}}
	var peers []string
	for i, a := range addrs {
		peers = append(peers, fmt.Sprintf("n%d=%s", i+1, a))
	}
	for i, a := range addrs {
		id := fmt.Sprintf("n%d", i+1)
		logf, err := os.OpenFile(filepath.Join(cfg.Dir, id+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			c.Stop()
			return nil, err
		}
		p := &Proc{ID: id, Addr: a, bin: bin, logf: logf, args: []string{"serve", "--id", id, "--addr", a,
			"--data", filepath.Join(cfg.Dir, id), "--peers", strings.Join(peers, ","),
			"--shards", fmt.Sprint(cfg.Shards), "--unsafe-fault-injection"}}
		if err := p.start(); err != nil {
			c.Stop()
			return nil, err
		}
		c.Procs = append(c.Procs, p)
	}
	if err := c.WaitHealthy(ctx, 60*time.Second); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// Stop ends every process.
func (c *Cluster) Stop() {
	var wg sync.WaitGroup
	for _, p := range c.Procs {
		wg.Add(1)
		go func() { defer wg.Done(); p.stop(); p.logf.Close() }()
	}
	wg.Wait()
}

// Proc returns the node with id.
func (c *Cluster) Proc(id string) *Proc {
	for _, p := range c.Procs {
		if p.ID == id {
			return p
		}
	}
	return nil
}

// IDs lists the node ids.
func (c *Cluster) IDs() []string {
	var ids []string
	for _, p := range c.Procs {
		ids = append(ids, p.ID)
	}
	return ids
}

// Status asks node p for /v1/cluster.
func (c *Cluster) Status(ctx context.Context, p *Proc) (client.ClusterStatus, error) {
	cl, err := client.New(p.URL(), client.WithHTTPClient(c.hc))
	if err != nil {
		return client.ClusterStatus{}, err
	}
	return cl.Cluster(ctx)
}

// Leaders counts the shards each node leads, as the first running node
// that answers sees it.
func (c *Cluster) Leaders(ctx context.Context) (map[string]int, error) {
	var last error
	for _, p := range c.Procs {
		if p.State() != Running {
			continue
		}
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
	for _, p := range c.Procs {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := c.Status(ctx, p)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w", p.ID, err)
		}
		for _, n := range st.Nodes {
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
	for _, p := range c.Procs {
		if p.State() != Running {
			continue
		}
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
	c.mu.Lock()
	rules := c.rules
	c.mu.Unlock()
	if len(rules) == 0 {
		return nil
	}
	body, err := json.Marshal(rules)
	if err != nil {
		return err
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
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut, p.URL()+"/debug/faults", bytes.NewReader(body))
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
