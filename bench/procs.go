package bench

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"lambdadb/client"
	"lambdadb/internal/loopback"
)

// Proc is one server process started by a benchmark.
type Proc struct {
	Name string
	Addr string // client address host:port
	Dir  string // data directory (lambdadb), "" if not known
	bin  string
	args []string
	logs string // directory of the log file
	cmd  *exec.Cmd
	log  *os.File
}

// Pid returns the process id, 0 when the process is not running.
func (p *Proc) Pid() int {
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Stop kills the process and waits for it.
func (p *Proc) Stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
	p.log.Close()
	p.cmd = nil
}

// Kill stops the process with SIGKILL (a crash) and waits for it.
func (p *Proc) Kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
	p.log.Close()
	p.cmd = nil
}

// Cluster is a set of server processes of one system.
type Cluster struct {
	System string // "lambdadb" or "etcd"
	Procs  []*Proc
	// A lambdadb cluster in secure mode (LambdaOptions.Secure): the CA
	// clients trust (a node's <data>/ca.pem) and the admin token the
	// cluster issued at bootstrap. Both empty in insecure mode.
	CAPEM []byte
	Token string
	dir   string
	hc    *http.Client // readiness checks; trusts CAPEM in secure mode
}

// Secure reports whether the cluster runs lambdadb in secure mode.
func (c *Cluster) Secure() bool { return len(c.CAPEM) > 0 }

// URL returns the base URL of process p: https:// in secure mode.
func (c *Cluster) URL(p *Proc) string {
	if c.Secure() {
		return "https://" + p.Addr
	}
	return "http://" + p.Addr
}

// URLs returns the base URLs of every process.
func (c *Cluster) URLs() []string {
	var out []string
	for _, p := range c.Procs {
		out = append(out, c.URL(p))
	}
	return out
}

// TLSConfig returns the client TLS configuration that trusts the
// cluster's CA; nil in insecure mode.
func (c *Cluster) TLSConfig() *tls.Config {
	if !c.Secure() {
		return nil
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.CAPEM)
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
}

func (c *Cluster) httpClient() *http.Client {
	if c.hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = c.TLSConfig()
		c.hc = &http.Client{Transport: tr}
	}
	return c.hc
}

// Stop stops every process and removes the data directories.
func (c *Cluster) Stop() {
	for _, p := range c.Procs {
		p.Stop()
	}
	os.RemoveAll(c.dir)
}

// Addrs returns the client addresses.
func (c *Cluster) Addrs() []string {
	var out []string
	for _, p := range c.Procs {
		out = append(out, p.Addr)
	}
	return out
}

func start(name, dir string, bin string, args ...string) (*Proc, error) {
	p := &Proc{Name: name, bin: bin, args: args, logs: dir}
	if err := p.start(); err != nil {
		return nil, err
	}
	return p, nil
}

// start (re)starts the process with its command line, appending to its log.
func (p *Proc) start() error {
	logf, err := os.OpenFile(filepath.Join(p.logs, p.Name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = procAttr() // no server outlives the benchmark
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("bench: start %s: %w", p.Name, err)
	}
	p.cmd, p.log = cmd, logf
	return nil
}

// StartLambdaDB starts an n-node lambdadb cluster from the binary bin.
func StartLambdaDB(bin string, n, shards int) (*Cluster, error) {
	return StartLambdaDBWith(LambdaOptions{Bin: bin, Nodes: n, Shards: shards})
}

// LambdaOptions configures StartLambdaDBWith.
type LambdaOptions struct {
	Bin    string   // path to bin/lambdadb; required
	Nodes  int      // default 3
	Shards int      // default 16
	Args   []string // more `lambdadb serve` flags, e.g. --fn-keep-alive 100ms
	// Secure runs the cluster in secure mode: a cluster secret written to
	// the cluster's directory and given to every node with
	// --cluster-secret-file (TLS 1.3 on each node's address, node to node
	// too; a bearer token on every request). Once the nodes are up the
	// cluster is bootstrapped: Cluster.Token is its admin token and
	// Cluster.CAPEM the CA the nodes wrote to <data>/ca.pem.
	Secure bool
}

// StartLambdaDBWith starts a lambdadb cluster of separate `lambdadb serve`
// processes on 127.0.0.1, with data in a new temporary directory, and
// waits until every shard has a leader.
func StartLambdaDBWith(o LambdaOptions) (*Cluster, error) {
	n, shards, bin := o.Nodes, o.Shards, o.Bin
	if n == 0 {
		n = 3
	}
	if shards == 0 {
		shards = 16
	}
	dir, err := os.MkdirTemp("", "lambdabench-ldb-")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	c := &Cluster{System: "lambdadb", dir: dir}
	addrs, err := loopback.FreeAddrs(n)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: %w", err)
	}
	var peers []string
	for i, a := range addrs {
		peers = append(peers, fmt.Sprintf("n%d=%s", i+1, a))
	}
	var secret string
	if o.Secure {
		if secret, err = writeClusterSecret(dir); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	for i, a := range addrs {
		id := fmt.Sprintf("n%d", i+1)
		args := []string{"serve", "--id", id, "--addr", a,
			"--data", filepath.Join(dir, id), "--shards", fmt.Sprint(shards)}
		if n > 1 {
			args = append(args, "--peers", strings.Join(peers, ","))
		}
		if secret != "" {
			args = append(args, "--cluster-secret-file", secret)
		}
		args = append(args, o.Args...)
		proc, err := start(id, dir, bin, args...)
		if err != nil {
			c.Stop()
			return nil, err
		}
		proc.Addr, proc.Dir = a, filepath.Join(dir, id)
		c.Procs = append(c.Procs, proc)
	}
	deadline := time.Now().Add(60 * time.Second)
	if o.Secure {
		if err := secureBootstrap(c, deadline); err != nil {
			c.Stop()
			return nil, err
		}
	}
	if err := waitLambdaDB(c, time.Until(deadline)); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// writeClusterSecret writes a random cluster secret (48 bytes, base64) to
// dir/cluster.secret, mode 0600, and returns its path.
func writeClusterSecret(dir string) (string, error) {
	b := make([]byte, 48)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("bench: cluster secret: %w", err)
	}
	path := filepath.Join(dir, "cluster.secret")
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(b)+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("bench: cluster secret: %w", err)
	}
	return path, nil
}

// secureBootstrap waits for the first node's <data>/ca.pem (every node
// derives the same CA from the secret), then asks the nodes in turn for
// the cluster's admin token until one issues it (the token store needs a
// shard leader).
func secureBootstrap(c *Cluster, deadline time.Time) error {
	caFile := filepath.Join(c.Procs[0].Dir, "ca.pem")
	for {
		b, err := os.ReadFile(caFile)
		if err == nil && len(b) > 0 {
			c.CAPEM = b
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: no %s after 60s (see the node's log): %v", caFile, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var last error
	for i := 0; time.Now().Before(deadline); i++ {
		p := c.Procs[i%len(c.Procs)]
		cl, err := client.New(c.URL(p), client.WithHTTPClient(c.httpClient()), client.WithoutRouting())
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		is, err := cl.Bootstrap(ctx)
		cancel()
		if err == nil {
			c.Token = is.Token
			return nil
		}
		var ae *client.Error
		if errors.As(err, &ae) && ae.Status == http.StatusConflict {
			// An earlier attempt was issued but its answer lost.
			return fmt.Errorf("bench: bootstrap of %s: %w", p.Name, err)
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("bench: secure lambdadb cluster not bootstrapped after 60s: %v", last)
}

// Restart stops every process of a lambdadb cluster, calls between (if
// not nil) while they are down, starts them again with the same flags and
// data, and waits until the cluster is ready.
func (c *Cluster) Restart(between func() error) error {
	for _, p := range c.Procs {
		p.Stop()
	}
	if between != nil {
		if err := between(); err != nil {
			return err
		}
	}
	for _, p := range c.Procs {
		if err := p.start(); err != nil {
			return err
		}
	}
	return waitLambdaDB(c, 60*time.Second)
}

// waitLambdaDB waits until every node reports every shard with a leader.
func waitLambdaDB(c *Cluster, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		ok := true
		for _, p := range c.Procs {
			if err := lambdaReady(c, p); err != nil {
				ok, last = false, err
				break
			}
		}
		if ok {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("bench: lambdadb cluster not ready after %v: %v", timeout, last)
}

func lambdaReady(c *Cluster, p *Proc) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", c.URL(p)+"/v1/cluster", nil)
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	res, err := c.httpClient().Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /v1/cluster: %s", res.Status)
	}
	var st struct {
		Nodes []struct {
			Up bool `json:"up"`
		} `json:"nodes"`
		Shards []struct {
			Leader string `json:"leader"`
		} `json:"shards"`
	}
	b, _ := io.ReadAll(res.Body)
	if err := json.Unmarshal(b, &st); err != nil {
		return err
	}
	for _, n := range st.Nodes {
		if !n.Up {
			return errors.New("a node is down")
		}
	}
	for _, s := range st.Shards {
		if s.Leader == "" {
			return errors.New("a shard has no leader")
		}
	}
	return nil
}

// StartEtcd starts an n-member etcd cluster from the binary bin (Debian's
// etcd-server, 3.4).
func StartEtcd(bin string, n int) (*Cluster, error) {
	dir, err := os.MkdirTemp("", "lambdabench-etcd-")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	c := &Cluster{System: "etcd", dir: dir}
	addrs, err := loopback.FreeAddrs(2 * n)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench: %w", err)
	}
	var initial []string
	for i := 0; i < n; i++ {
		initial = append(initial, fmt.Sprintf("e%d=http://%s", i+1, addrs[2*i+1]))
	}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("e%d", i+1)
		client := "http://" + addrs[2*i]
		peer := "http://" + addrs[2*i+1]
		proc, err := start(name, dir, bin,
			"--name", name, "--data-dir", filepath.Join(dir, name),
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new", "--initial-cluster-token", "lambdabench",
			"--logger", "zap", "--log-level", "error")
		if err != nil {
			c.Stop()
			return nil, err
		}
		proc.Addr = addrs[2*i]
		c.Procs = append(c.Procs, proc)
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, p := range c.Procs {
		for {
			res, err := http.Get("http://" + p.Addr + "/health")
			if err == nil {
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if strings.Contains(string(b), `"true"`) {
					break
				}
			}
			if time.Now().After(deadline) {
				c.Stop()
				return nil, fmt.Errorf("bench: etcd %s not healthy", p.Name)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return c, nil
}
