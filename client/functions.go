package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Function is a deployed function's configuration and, when read through
// Functions or Function, its meters summed over the cluster's nodes.
type Function struct {
	Name         string    `json:"name"`
	SHA256       string    `json:"sha256"`
	Size         int       `json:"size"`
	MemoryMB     int       `json:"memory_mb"`
	TimeoutMS    int       `json:"timeout_ms"`
	MaxInstances int       `json:"max_instances"`
	Entrypoints  []string  `json:"entrypoints"`
	DeployedAt   time.Time `json:"deployed_at"`
	// CreatedAt is when the name was first deployed (redeploys keep it).
	CreatedAt time.Time `json:"created_at"`
	Version   uint64    `json:"version"`

	FunctionStats
	Nodes map[string]NodeFunctionStats `json:"nodes,omitempty"`
}

// FunctionStats are a function's meters.
type FunctionStats struct {
	Invocations  uint64            `json:"invocations"`
	Errors       uint64            `json:"errors"`
	Throttles    uint64            `json:"throttles"` // calls refused with 429
	ErrorsByCode map[string]uint64 `json:"errors_by_code"`
	Starts       map[string]uint64 `json:"starts"`
	Sandboxes    Sandboxes         `json:"sandboxes"`
	DurationUS   uint64            `json:"duration_us"`
	BilledMS     uint64            `json:"billed_ms"`
	GBSeconds    float64           `json:"gb_seconds"`
	KVCalls      uint64            `json:"kv_calls"`
	KVBytes      uint64            `json:"kv_bytes"`
	P50US        float64           `json:"p50_us"`
	P99US        float64           `json:"p99_us"`
}

// NodeFunctionStats are one node's meters; Error is set when the node did
// not answer.
type NodeFunctionStats struct {
	FunctionStats
	Error string `json:"error,omitempty"`
}

// Sandboxes counts sandboxes by state.
type Sandboxes struct {
	Running int `json:"running"`
	Paused  int `json:"paused"`
	Stopped int `json:"stopped"`
	Cold    int `json:"cold"`
}

// DeployOptions are a deploy's parameters; zero values select the
// server's defaults (64 MB, 1000 ms, 100 instances).
type DeployOptions struct {
	MemoryMB     int
	TimeoutMS    int
	MaxInstances int
}

// Deploy uploads a WebAssembly module as function name, replacing any
// earlier version.
func (c *Client) Deploy(ctx context.Context, name string, module []byte, o DeployOptions) (Function, error) {
	q := url.Values{}
	for _, p := range []struct {
		k string
		v int
	}{{"memory_mb", o.MemoryMB}, {"timeout_ms", o.TimeoutMS}, {"max_instances", o.MaxInstances}} {
		if p.v != 0 {
			q.Set(p.k, strconv.Itoa(p.v))
		}
	}
	var f Function
	if module == nil {
		module = []byte{}
	}
	_, err := c.doJSON(ctx, http.MethodPut, "/v1/functions/"+url.PathEscape(name), q, module, nil, &f)
	return f, err
}

// Functions lists the deployed functions with their cluster-wide meters.
func (c *Client) Functions(ctx context.Context) ([]Function, error) {
	var out struct {
		Functions []Function `json:"functions"`
	}
	_, err := c.doJSON(ctx, http.MethodGet, "/v1/functions", nil, nil, nil, &out)
	return out.Functions, err
}

// Function returns one function's configuration and meters.
func (c *Client) Function(ctx context.Context, name string) (Function, error) {
	var f Function
	_, err := c.doJSON(ctx, http.MethodGet, "/v1/functions/"+url.PathEscape(name), nil, nil, nil, &f)
	return f, err
}

// RemoveFunction deletes a function.
func (c *Client) RemoveFunction(ctx context.Context, name string) error {
	var out struct{}
	_, err := c.doJSON(ctx, http.MethodDelete, "/v1/functions/"+url.PathEscape(name), nil, nil, nil, &out)
	return err
}

// LogLine is one line a handler logged.
type LogLine struct {
	Time time.Time `json:"time"`
	Node string    `json:"node"`
	Line string    `json:"line"`
}

// FunctionLogs returns a function's recent log lines from every node,
// oldest first.
func (c *Client) FunctionLogs(ctx context.Context, name string) ([]LogLine, error) {
	var out struct {
		Lines []LogLine `json:"lines"`
	}
	_, err := c.doJSON(ctx, http.MethodGet, "/v1/functions/"+url.PathEscape(name)+"/logs", nil, nil, nil, &out)
	return out.Lines, err
}

// InvokeOption adjusts an invocation.
type InvokeOption func(url.Values)

// WithKey places the invocation on the node holding key's shard (its
// leader); the handler sees key as Ctx.Key.
func WithKey(key string) InvokeOption { return func(q url.Values) { q.Set("key", key) } }

// WithHandlerConsistency sets the consistency of the handler's reads
// (default: session).
func WithHandlerConsistency(c Consistency) InvokeOption {
	return func(q url.Values) { q.Set("consistency", string(c)) }
}

// Invocation is the result of Invoke.
type Invocation struct {
	Body       []byte
	Start      string // warm, restart or cold
	Node       string // the node that ran it
	DurationUS int64
	BilledMS   int64
}

// Invoke calls a function's Handle entry point. The client's session
// covers the handler's writes afterwards. A handler error is an *Error
// with Code "handler_error" (memory cap: "memory_limit", a stack that
// outgrew the sandbox: "stack_overflow", time cap: "timeout").
func (c *Client) Invoke(ctx context.Context, name string, req []byte, opts ...InvokeOption) (Invocation, error) {
	q := url.Values{}
	for _, o := range opts {
		o(q)
	}
	if req == nil {
		req = []byte{}
	}
	path := "/v1/functions/" + url.PathEscape(name) + "/invoke"
	var resp *http.Response
	var body []byte
	var err error
	if key := q.Get("key"); key != "" && q.Get("placement") == "" {
		// The call runs on the key's shard leader: send it there.
		resp, body, err = c.doRouted(ctx, http.MethodPost, path, key, q, req, nil)
	} else {
		resp, body, err = c.do(ctx, http.MethodPost, path, q, req, nil)
	}
	if err != nil {
		return Invocation{}, err
	}
	inv := Invocation{Body: body, Start: resp.Header.Get("X-Start"), Node: resp.Header.Get("X-Node")}
	inv.DurationUS, _ = strconv.ParseInt(resp.Header.Get("X-Duration-Us"), 10, 64)
	inv.BilledMS, _ = strconv.ParseInt(resp.Header.Get("X-Billed-Ms"), 10, 64)
	return inv, nil
}
