package bench

import (
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
	"syscall"
	"time"

	"lambdadb/internal/loopback"
)

// Proc is one server process started by a benchmark.
type Proc struct {
	Name string
	Addr string // client address host:port
	cmd  *exec.Cmd
	log  *os.File
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

// Cluster is a set of server processes of one system.
type Cluster struct {
	System string // "lambdadb" or "etcd"
	Procs  []*Proc
	dir    string
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
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("bench: start %s: %w", name, err)
	}
	return &Proc{Name: name, cmd: cmd, log: logf}, nil
}

// StartLambdaDB starts an n-node lambdadb cluster from the binary bin.
func StartLambdaDB(bin string, n, shards int) (*Cluster, error) {
	dir, err := os.MkdirTemp("", "lambdabench-ldb-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{System: "lambdadb", dir: dir}
	addrs, err := loopback.FreeAddrs(n)
	if err != nil {
		return nil, err
	}
	var peers []string
	for i, a := range addrs {
		peers = append(peers, fmt.Sprintf("n%d=%s", i+1, a))
	}
	for i, a := range addrs {
		id := fmt.Sprintf("n%d", i+1)
		args := []string{"serve", "--id", id, "--addr", a,
			"--data", filepath.Join(dir, id), "--shards", fmt.Sprint(shards)}
		if n > 1 {
			args = append(args, "--peers", strings.Join(peers, ","))
		}
		proc, err := start(id, dir, bin, args...)
		if err != nil {
			c.Stop()
			return nil, err
		}
		proc.Addr = a
		c.Procs = append(c.Procs, proc)
	}
	if err := waitLambdaDB(c, 60*time.Second); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// waitLambdaDB waits until every node reports every shard with a leader.
func waitLambdaDB(c *Cluster, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		ok := true
		for _, p := range c.Procs {
			if err := lambdaReady(p.Addr); err != nil {
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

func lambdaReady(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/v1/cluster", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
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
		return nil, err
	}
	c := &Cluster{System: "etcd", dir: dir}
	addrs, err := loopback.FreeAddrs(2 * n)
	if err != nil {
		return nil, err
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
