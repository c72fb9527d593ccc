package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"lambdadb/client"
)

// FnClient calls the function API of one lambdadb node over HTTP and
// reads the meters each invocation returns in its headers.
type FnClient struct {
	Addr string // host:port of the node
	hc   *http.Client
}

// NewFnClient returns a client for the node at addr that keeps up to
// conns connections open.
func NewFnClient(addr string, conns int) *FnClient {
	tr := &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, IdleConnTimeout: time.Minute}
	return &FnClient{Addr: addr, hc: &http.Client{Transport: tr}}
}

// Close closes idle connections.
func (c *FnClient) Close() { c.hc.CloseIdleConnections() }

// DeployOptions are a deploy's query parameters; zero values select the
// server's defaults.
type DeployOptions = client.DeployOptions

// Deploy uploads module as function name.
func (c *FnClient) Deploy(ctx context.Context, name string, module []byte, o DeployOptions) error {
	cl, err := client.New("http://"+c.Addr, client.WithHTTPClient(c.hc))
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if _, err := cl.Deploy(ctx, name, module, o); err != nil {
		return fmt.Errorf("bench: deploy %s: %w", name, err)
	}
	return nil
}

// Call is one invocation as the client saw it.
type Call struct {
	Status     int           // HTTP status
	Latency    time.Duration // request sent → response read, at the client
	Start      string        // X-Start: warm, restart or cold
	StartUS    int64         // X-Start-Us: time to obtain the sandbox, on the node
	DurationUS int64         // X-Duration-Us: the metered wall time
	BilledMS   int64         // X-Billed-Ms
	GBSeconds  float64       // X-Gb-Seconds
	Code       string        // error code of a failed call
}

// Invoke calls function name with body. A non-200 answer is a Call with
// its Status and Code and no error; err is for transport failures.
func (c *FnClient) Invoke(ctx context.Context, name string, body []byte) (Call, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		"http://"+c.Addr+"/v1/functions/"+url.PathEscape(name)+"/invoke", bytes.NewReader(body))
	if err != nil {
		return Call{}, fmt.Errorf("bench: %w", err)
	}
	t0 := time.Now()
	res, err := c.hc.Do(req)
	if err != nil {
		return Call{}, fmt.Errorf("bench: invoke %s: %w", name, err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	call := Call{Status: res.StatusCode, Latency: time.Since(t0)}
	if err != nil {
		return call, fmt.Errorf("bench: invoke %s: %w", name, err)
	}
	h := res.Header
	call.Start = h.Get("X-Start")
	call.StartUS, _ = strconv.ParseInt(h.Get("X-Start-Us"), 10, 64)
	call.DurationUS, _ = strconv.ParseInt(h.Get("X-Duration-Us"), 10, 64)
	call.BilledMS, _ = strconv.ParseInt(h.Get("X-Billed-Ms"), 10, 64)
	call.GBSeconds, _ = strconv.ParseFloat(h.Get("X-Gb-Seconds"), 64)
	if res.StatusCode != http.StatusOK {
		var e struct {
			Code  string `json:"code"`
			Error string `json:"error"`
		}
		_ = json.Unmarshal(b, &e)
		call.Code = e.Code
		if call.Code == "" {
			call.Code = strconv.Itoa(res.StatusCode)
		}
	}
	return call, nil
}

// mustOK turns a failed Call into an error.
func (c Call) mustOK(name string) error {
	if c.Status != http.StatusOK {
		return fmt.Errorf("bench: invoke %s: status %d (%s)", name, c.Status, c.Code)
	}
	return nil
}

// FnStats are the meters GET /v1/functions/{name} returns.
type FnStats struct {
	Invocations uint64            `json:"invocations"`
	Errors      uint64            `json:"errors"`
	Starts      map[string]uint64 `json:"starts"`
	BilledMS    uint64            `json:"billed_ms"`
	DurationUS  uint64            `json:"duration_us"`
	GBSeconds   float64           `json:"gb_seconds"`
	Sandboxes   struct {
		Running int `json:"running"`
		Paused  int `json:"paused"`
		Stopped int `json:"stopped"`
		Cold    int `json:"cold"`
	} `json:"sandboxes"`
}

// Stats reads a function's meters on this node.
func (c *FnClient) Stats(ctx context.Context, name string) (FnStats, error) {
	var st FnStats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.Addr+"/v1/functions/"+url.PathEscape(name)+"?scope=node", nil)
	if err != nil {
		return st, fmt.Errorf("bench: %w", err)
	}
	res, err := c.hc.Do(req)
	if err != nil {
		return st, fmt.Errorf("bench: stats %s: %w", name, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return st, fmt.Errorf("bench: stats %s: %s", name, res.Status)
	}
	if err := json.NewDecoder(res.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("bench: stats %s: %w", name, err)
	}
	return st, nil
}

// Metrics reads the node's Prometheus metrics: series without labels by
// name, and labelled series by their full text (name{labels}).
func (c *FnClient) Metrics(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.Addr+"/metrics", nil)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	res, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("bench: metrics: %w", err)
	}
	defer res.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// rssBytes returns the resident set size of process pid.
func rssBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				if err != nil {
					return 0, fmt.Errorf("bench: VmRSS: %w", err)
				}
				return kb << 10, nil
			}
		}
	}
	return 0, fmt.Errorf("bench: no VmRSS for process %d", pid)
}

// pssBytes returns a process's proportional set size (smaps_rollup): a
// page mapped k times counts 1/k each time.
func pssBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Pss:"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				if err != nil {
					return 0, fmt.Errorf("bench: Pss: %w", err)
				}
				return kb << 10, nil
			}
		}
	}
	return 0, fmt.Errorf("bench: no Pss for process %d", pid)
}

// withCustomSection returns a copy of a WebAssembly module with a custom
// section appended. Runtimes ignore custom sections they do not know, so
// the copy behaves exactly as the original, but its bytes — and so its
// SHA-256, the registry's and the compilation cache's key — differ: it is
// compiled from scratch. sandbox-start uses it to get distinct modules of
// identical code.
func withCustomSection(module []byte, name string, payload []byte) []byte {
	var content []byte
	content = binary.AppendUvarint(content, uint64(len(name)))
	content = append(content, name...)
	content = append(content, payload...)
	out := append([]byte(nil), module...)
	out = append(out, 0) // section id 0: custom
	out = binary.AppendUvarint(out, uint64(len(content)))
	return append(out, content...)
}
