package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"lambdadb/internal/session"
)

// Client talks to one lambdadb server. Create it with New.
type Client struct {
	base   string // scheme://host[/path], no trailing slash
	hc     *http.Client
	router *router // nil: every request goes to base

	auth      string // bearer token (WithAuth)
	namespace string // X-Namespace (WithNamespace)

	mu     sync.Mutex
	tok    session.Token
	tokStr string // tok.Encode(), cached
}

// Option configures New.
type Option func(*options)

type options struct {
	hc        *http.Client
	token     string
	auth      string
	namespace string
	noRouting bool
	tls       *tls.Config // nil: the HTTP client's own
	tlsErr    error
}

// WithAuth sends the access token tok ("ldb_...") with every request, as
// a secure-mode cluster requires (Authorization: Bearer). Default: none,
// for a cluster in insecure mode.
func WithAuth(tok string) Option { return func(o *options) { o.auth = tok } }

// WithNamespace makes an admin token's requests act in namespace ns
// (X-Namespace). A token of any other kind acts in its own namespace
// only. Default: the token's namespace.
func WithNamespace(ns string) Option { return func(o *options) { o.namespace = ns } }

// WithCACert trusts the CA certificates in pemCerts (PEM, one or more;
// for example a node's <data>/ca.pem) for https:// servers, instead of
// the system's roots: what a client of a cluster in secure mode needs.
func WithCACert(pemCerts []byte) Option {
	return func(o *options) {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemCerts) {
			o.tlsErr = errors.New("client: WithCACert: no PEM certificate found")
			return
		}
		o.tls = &tls.Config{RootCAs: pool}
	}
}

// WithTLSConfig sets the TLS configuration of https:// requests (trusted
// CAs, a client certificate). It applies to the HTTP client's transport,
// which must then be an *http.Transport (the default's is).
func WithTLSConfig(cfg *tls.Config) Option { return func(o *options) { o.tls = cfg } }

// WithHTTPClient sets the HTTP client used for requests.
// Default: a new http.Client without a timeout (use contexts).
func WithHTTPClient(hc *http.Client) Option { return func(o *options) { o.hc = hc } }

// WithToken starts the Client's session from a token obtained from
// another Client's Token. Default: an empty session.
func WithToken(token string) Option { return func(o *options) { o.token = token } }

// WithoutRouting sends every request to the base URL. By default a Client
// sends requests for one key (Put, Get, Delete) straight to the node that
// leads the key's shard, learnt from the cluster's placement, so that they
// skip a forwarding hop; a base URL with a path (a proxy) never routes.
func WithoutRouting() Option { return func(o *options) { o.noRouting = true } }

// New returns a Client for the server at baseURL, such as
// "http://127.0.0.1:7070". baseURL may include a path prefix.
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("client: base URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("client: base URL %q: want http://host[:port] or https://host[:port]", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("client: base URL %q: must not have a query or fragment", baseURL)
	}
	o := options{hc: &http.Client{}}
	for _, opt := range opts {
		opt(&o)
	}
	if o.tlsErr != nil {
		return nil, o.tlsErr
	}
	if o.tls != nil {
		if o.hc, err = withTLS(o.hc, o.tls); err != nil {
			return nil, err
		}
	}
	tok, err := session.Decode(o.token)
	if err != nil {
		return nil, fmt.Errorf("client: WithToken: %w", err)
	}
	if strings.ContainsAny(o.auth, " \t\r\n") {
		return nil, errors.New("client: WithAuth: a token has no spaces")
	}
	c := &Client{base: strings.TrimSuffix(u.String(), "/"), hc: o.hc, auth: o.auth, namespace: o.namespace}
	if !o.noRouting && (u.Path == "" || u.Path == "/") {
		c.router = &router{c: c, scheme: u.Scheme}
	}
	c.observe(tok)
	return c, nil
}

// withTLS returns a copy of hc whose transport uses cfg.
func withTLS(hc *http.Client, cfg *tls.Config) (*http.Client, error) {
	var tr *http.Transport
	switch t := hc.Transport.(type) {
	case nil:
		tr = http.DefaultTransport.(*http.Transport).Clone()
	case *http.Transport:
		tr = t.Clone()
	default:
		return nil, fmt.Errorf("client: WithTLSConfig/WithCACert need an *http.Transport, the HTTP client has a %T", t)
	}
	tr.TLSClientConfig = cfg.Clone()
	c := *hc
	c.Transport = tr
	return &c, nil
}

// WithSession returns a Client that shares c's HTTP client, credentials
// and routing (what it learnt of the cluster's placement) but holds a
// session of its own, started from token ("": an empty session). A server
// acting for many end users keeps one Client and takes one WithSession
// per user request, carrying each user's token, so every user reads their
// own writes without a placement fetch per Client.
func (c *Client) WithSession(token string) (*Client, error) {
	tok, err := session.Decode(token)
	if err != nil {
		return nil, fmt.Errorf("client: WithSession: %w", err)
	}
	s := &Client{base: c.base, hc: c.hc, router: c.router, auth: c.auth, namespace: c.namespace}
	s.observe(tok)
	return s, nil
}

// Token returns the Client's session token ("" before the first response
// that carried one). Pass it to WithToken to continue the session elsewhere.
func (c *Client) Token() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tokStr
}

// observe merges tok into the Client's session.
func (c *Client) observe(tok session.Token) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tok.Covers(tok) {
		return
	}
	c.tok = c.tok.Merge(tok)
	c.tokStr = c.tok.Encode()
}

// Consistency selects how a read is served; see the server's API docs.
type Consistency string

// Consistency levels. The zero value lets the server choose: session when
// the Client holds a token, else linearizable.
const (
	Linearizable Consistency = "linearizable"
	Session      Consistency = "session"
	Stale        Consistency = "stale"
)

// ReadOption modifies a Get.
type ReadOption func(*readOptions)

type readOptions struct{ consistency Consistency }

// WithConsistency sets the read's consistency level.
func WithConsistency(c Consistency) ReadOption {
	return func(o *readOptions) { o.consistency = c }
}

// WriteOption adds a precondition to a Put or Delete.
type WriteOption func(*writeOptions)

type writeOptions struct {
	ifMatch     *uint64
	ifNoneMatch bool
}

// IfMatch makes the write happen only if the key exists at exactly this
// version; otherwise it fails with an error matching ErrPrecondition.
func IfMatch(version uint64) WriteOption {
	return func(o *writeOptions) { o.ifMatch = &version }
}

// IfNoneMatch makes a Put happen only if the key is absent; otherwise it
// fails with an error matching ErrPrecondition. (The server rejects it on
// Delete.)
func IfNoneMatch() WriteOption {
	return func(o *writeOptions) { o.ifNoneMatch = true }
}

func (o writeOptions) apply(h http.Header) {
	if o.ifMatch != nil {
		h.Set("If-Match", `"`+strconv.FormatUint(*o.ifMatch, 10)+`"`)
	}
	if o.ifNoneMatch {
		h.Set("If-None-Match", "*")
	}
}

// Item is a stored key with its value and version.
type Item struct {
	Key     string
	Value   []byte
	Version uint64
}

// Put stores value under key and returns the version written.
func (c *Client) Put(ctx context.Context, key string, value []byte, opts ...WriteOption) (uint64, error) {
	var o writeOptions
	for _, opt := range opts {
		opt(&o)
	}
	var out struct {
		Version uint64 `json:"version"`
	}
	resp, b, err := c.doKey(ctx, http.MethodPut, key, nil, value, o.apply)
	if err != nil {
		return 0, err
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return 0, fmt.Errorf("client: PUT %s: decoding response (%s): %w", keyPath(key), resp.Status, err)
	}
	return out.Version, nil
}

// Get reads key. found is false, with a nil error, when the key is absent.
func (c *Client) Get(ctx context.Context, key string, opts ...ReadOption) (item Item, found bool, err error) {
	var o readOptions
	for _, opt := range opts {
		opt(&o)
	}
	q := url.Values{}
	if o.consistency != "" {
		q.Set("consistency", string(o.consistency))
	}
	resp, body, err := c.doKey(ctx, http.MethodGet, key, q, nil, nil)
	if errors.Is(err, ErrNotFound) {
		return Item{}, false, nil
	}
	if err != nil {
		return Item{}, false, err
	}
	version, err := parseETag(resp.Header.Get("ETag"))
	if err != nil {
		return Item{}, false, err
	}
	return Item{Key: key, Value: body, Version: version}, true, nil
}

// Delete removes key and reports whether it existed.
func (c *Client) Delete(ctx context.Context, key string, opts ...WriteOption) (deleted bool, err error) {
	var o writeOptions
	for _, opt := range opts {
		opt(&o)
	}
	var out struct {
		Deleted bool `json:"deleted"`
	}
	resp, b, err := c.doKey(ctx, http.MethodDelete, key, nil, nil, o.apply)
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return false, fmt.Errorf("client: DELETE %s: decoding response (%s): %w", keyPath(key), resp.Status, err)
	}
	return out.Deleted, nil
}

// ScanOptions narrow a scan to keys in [Start, End) that begin with the
// prefix.
type ScanOptions struct {
	Start string // first key (inclusive); "" = from the prefix
	End   string // end key (exclusive); "" = to the end of the prefix
	// Limit is the page size: at most this many items per request.
	// 0 = the server's default (100); the server's maximum is 10000.
	Limit       int
	Consistency Consistency // "" = the server's default
}

// Page is one page of a scan. When More is true, Next is the Start of the
// following page.
type Page struct {
	Items []Item
	Next  string
	More  bool
}

// Scan returns one page of the keys that begin with prefix, in key order
// across all shards.
func (c *Client) Scan(ctx context.Context, prefix string, opts ScanOptions) (Page, error) {
	q := url.Values{"prefix": {prefix}}
	if opts.Start != "" {
		q.Set("start", opts.Start)
	}
	if opts.End != "" {
		q.Set("end", opts.End)
	}
	if opts.Limit != 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	if opts.Consistency != "" {
		q.Set("consistency", string(opts.Consistency))
	}
	var out struct {
		Items []struct {
			Key     string `json:"key"`
			Value   []byte `json:"value"`
			Version uint64 `json:"version"`
		} `json:"items"`
		Next *string `json:"next"`
	}
	if _, err := c.doJSON(ctx, http.MethodGet, "/v1/kv", q, nil, nil, &out); err != nil {
		return Page{}, err
	}
	p := Page{Items: make([]Item, len(out.Items))}
	for i, it := range out.Items {
		p.Items[i] = Item{Key: it.Key, Value: it.Value, Version: it.Version}
	}
	if out.Next != nil {
		p.Next, p.More = *out.Next, true
	}
	return p, nil
}

// ScanAll iterates over every key that begins with prefix, requesting
// pages of opts.Limit items as it goes. On an error it yields the error
// once and stops.
func (c *Client) ScanAll(ctx context.Context, prefix string, opts ScanOptions) iter.Seq2[Item, error] {
	return func(yield func(Item, error) bool) {
		for {
			page, err := c.Scan(ctx, prefix, opts)
			if err != nil {
				yield(Item{}, err)
				return
			}
			for _, it := range page.Items {
				if !yield(it, nil) {
					return
				}
			}
			if !page.More {
				return
			}
			opts.Start = page.Next
		}
	}
}

// ClusterStatus describes the cluster's nodes and shards as the server
// sees them.
type ClusterStatus struct {
	Node string `json:"node"` // the answering node
	// MapVersion is the version of the cluster map (membership and
	// placement) the answering node has; it grows with every change.
	MapVersion uint64 `json:"map_version"`
	// RebalancePaused is true while the cluster starts no new replica
	// moves (PauseRebalance); moves under way still finish.
	RebalancePaused bool `json:"rebalance_paused"`
	// Settled is true when, by the answering node's map, no move is in
	// flight, no node is joining or decommissioning, and replicas and
	// preferred leaders are where the cluster wants them.
	Settled bool          `json:"settled"`
	Nodes   []NodeStatus  `json:"nodes"`
	Shards  []ShardStatus `json:"shards"`
	// Moves are the replica moves in flight, as the answering node's map
	// records them (Moves asks the metadata leader, which also knows
	// their progress).
	Moves []MoveStatus `json:"moves"`
}

// Node membership states (NodeStatus.State).
const (
	// NodeJoining: the node has registered and is not serving yet.
	NodeJoining = "joining"
	// NodeActive: the node holds replicas and takes new ones.
	NodeActive = "active"
	// NodeDecommissioning: its replicas are being moved to other nodes
	// (Decommission); it keeps serving until it holds none.
	NodeDecommissioning = "decommissioning"
	// NodeDecommissioned: it holds no replica and may be stopped and
	// removed (RemoveNode).
	NodeDecommissioned = "decommissioned"
	// NodeRemoved: the cluster has forgotten it; its name may be used by
	// a new node, its data directory never again.
	NodeRemoved = "removed"
)

// NodeStatus is one member node.
type NodeStatus struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
	// Up is whether the node answered the answering node's last status
	// probe (always true for the answering node, false once removed).
	Up bool `json:"up"`
	// State is the node's membership state: NodeJoining, NodeActive,
	// NodeDecommissioning, NodeDecommissioned or NodeRemoved.
	State string `json:"state"`
	// Number is the node's Raft node number, never reused by another
	// node.
	Number uint64 `json:"number"`
	// Replicas counts the shard replicas the cluster places on the node
	// (the metadata group's included); Leaders the shards it leads.
	Replicas int `json:"replicas"`
	Leaders  int `json:"leaders"`
	// Moves counts the replica moves in flight to or from the node.
	Moves int `json:"moves"`
	// Since is when the node entered State (zero when unknown).
	Since time.Time `json:"since"`
}

// Replica move phases (MoveStatus.Phase).
const (
	// MoveLearner: the target's new replica is being filled (a snapshot,
	// then the log) without a vote.
	MoveLearner = "learner"
	// MovePromote: the target has caught up and is being made a voter.
	MovePromote = "promote"
	// MoveRemove: the target votes; the source's replica is being
	// removed.
	MoveRemove = "remove"
	// MoveCancel: the move failed before promotion; the target's replica
	// is being removed.
	MoveCancel = "cancel"
)

// MoveStatus is one replica move in flight: a shard's replica moving from
// one node to another (or only added, when From is empty).
type MoveStatus struct {
	// Shard is the shard's number in decimal, or "meta" for the metadata
	// group (which holds the cluster map).
	Shard string `json:"shard"`
	From  string `json:"from,omitempty"`
	To    string `json:"to"`
	// Phase is MoveLearner, MovePromote, MoveRemove or MoveCancel.
	Phase string `json:"phase"`
	// Applied is the target replica's log position and Target the
	// shard leader's; the learner has caught up when they meet (both 0
	// when the metadata leader could not be asked).
	Applied uint64 `json:"applied"`
	Target  uint64 `json:"target"`
	// BytesSent counts the snapshot bytes sent to the target so far.
	BytesSent int64     `json:"bytes_sent"`
	Started   time.Time `json:"started"`
	// Waiting says what the move is waiting for, when it is stuck ("" when
	// it is progressing).
	Waiting string `json:"waiting,omitempty"`
}

// ShardStatus is one shard's Raft group.
type ShardStatus struct {
	ID       int             `json:"id"`
	Leader   string          `json:"leader"`
	Replicas []ReplicaStatus `json:"replicas"`
}

// ReplicaStatus is one replica of a shard.
type ReplicaStatus struct {
	Node    string `json:"node"`
	Applied uint64 `json:"applied"`
	State   string `json:"state,omitempty"`
}

// Cluster returns the cluster's status.
func (c *Client) Cluster(ctx context.Context) (ClusterStatus, error) {
	var st ClusterStatus
	_, err := c.doJSON(ctx, http.MethodGet, "/v1/cluster", nil, nil, nil, &st)
	return st, err
}

// Health is the server's liveness report.
type Health struct {
	Status string `json:"status"` // "ok"
	Node   string `json:"node"`   // the answering node's ID
}

// Health checks that the server is up.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	_, err := c.doJSON(ctx, http.MethodGet, "/healthz", nil, nil, nil, &h)
	return h, err
}

// doJSON is do followed by decoding a JSON response body into out.
func (c *Client) doJSON(ctx context.Context, method, path string, q url.Values, body []byte,
	header func(http.Header), out any) (*http.Response, error) {
	resp, b, err := c.do(ctx, method, path, q, body, header)
	if err != nil {
		return resp, err
	}
	if err := json.Unmarshal(b, out); err != nil {
		return resp, fmt.Errorf("client: %s %s: decoding response: %w", method, path, err)
	}
	return resp, nil
}

// doKey is do for a request on one key, sent to the key's shard leader
// when the router knows it (and to the base URL if that node cannot be
// reached).
func (c *Client) doKey(ctx context.Context, method, key string, q url.Values, body []byte,
	header func(http.Header)) (*http.Response, []byte, error) {
	return c.doRouted(ctx, method, keyPath(key), key, q, body, header)
}

// doRouted sends a request about key (at path) to the key's shard leader
// when the router knows it, else to the base URL; to the base URL if the
// leader cannot be reached, and to the other nodes if the base cannot be
// either.
func (c *Client) doRouted(ctx context.Context, method, path, key string, q url.Values, body []byte,
	header func(http.Header)) (*http.Response, []byte, error) {
	if c.router == nil {
		return c.do(ctx, method, path, q, body, header)
	}
	base := c.router.target(key)
	if base == "" {
		base = c.base
	}
	resp, b, err := c.doAt(ctx, base, method, path, q, body, header)
	if err != nil && base != c.base && notSent(err) {
		c.router.forget(key)
		resp, b, err = c.doAt(ctx, c.base, method, path, q, body, header)
	}
	if err != nil && notSent(err) {
		// The base node is down too: any node serves any key.
		for _, other := range c.router.others(c.base) {
			if other == base {
				continue
			}
			if resp, b, err = c.doAt(ctx, other, method, path, q, body, header); err == nil || !notSent(err) {
				break
			}
		}
	}
	if resp != nil {
		c.router.observe(key, resp)
	}
	return resp, b, err
}

// do sends one request with the session token, merges the response's
// token, and returns the response with its body read. Statuses >= 300
// become *Error. The request goes to the base URL; when that node cannot
// be reached (the request was not sent) and the Client routes, to the
// other nodes it knows, one after the other.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body []byte,
	header func(http.Header)) (*http.Response, []byte, error) {
	resp, b, err := c.doAt(ctx, c.base, method, path, q, body, header)
	if err != nil && c.router != nil && notSent(err) {
		for _, other := range c.router.others(c.base) {
			if resp, b, err = c.doAt(ctx, other, method, path, q, body, header); err == nil || !notSent(err) {
				break
			}
		}
	}
	return resp, b, err
}

// overloadRetries is how many times a request refused as overloaded (503
// "overloaded": the node did not run it) is sent again, each after the
// response's Retry-After (at most maxRetryAfter) or the context's end.
const (
	overloadRetries = 3
	maxRetryAfter   = 5 * time.Second
)

// doAt is do against the server at base, sent again while the node answers
// that it is overloaded (the request did not run there).
func (c *Client) doAt(ctx context.Context, base, method, path string, q url.Values, body []byte,
	header func(http.Header)) (*http.Response, []byte, error) {
	for attempt := 0; ; attempt++ {
		resp, b, err := c.send(ctx, base, method, path, q, body, header)
		var e *Error
		if attempt == overloadRetries || !errors.As(err, &e) || e.Status != http.StatusServiceUnavailable || e.Code != "overloaded" {
			return resp, b, err
		}
		wait := time.Second
		if secs, perr := strconv.Atoi(resp.Header.Get("Retry-After")); perr == nil && secs >= 0 {
			wait = min(time.Duration(secs)*time.Second, maxRetryAfter)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return resp, b, err
		case <-t.C:
		}
	}
}

// send sends one request to the server at base.
func (c *Client) send(ctx context.Context, base, method, path string, q url.Values, body []byte,
	header func(http.Header)) (*http.Response, []byte, error) {
	u := base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	if body != nil || method == http.MethodPut {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, nil, fmt.Errorf("client: %w", err)
	}
	if tok := c.Token(); tok != "" {
		req.Header.Set(session.Header, tok)
	}
	if c.auth != "" {
		req.Header.Set("Authorization", "Bearer "+c.auth)
	}
	if c.namespace != "" {
		req.Header.Set("X-Namespace", c.namespace)
	}
	if header != nil {
		header(req.Header)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("client: %w", err)
	}
	defer resp.Body.Close()
	if tok, err := session.Decode(resp.Header.Get(session.Header)); err == nil {
		c.observe(tok) // a malformed token from the server is ignored
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp, nil, fmt.Errorf("client: %s %s: reading response: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		return resp, nil, newError(resp, b)
	}
	return resp, b, nil
}

// keyPath returns the URL path of key.
func keyPath(key string) string { return "/v1/kv/" + escapeKey(key) }

// escapeKey percent-escapes key per "/"-separated segment, keeping "/"
// readable, and escapes what HTTP path cleaning would otherwise rewrite:
// "." and ".." segments become %2E, and a key with an empty segment has
// all of its slashes escaped.
func escapeKey(key string) string {
	segs := strings.Split(key, "/")
	for _, s := range segs {
		if s == "" && len(segs) > 1 {
			return url.PathEscape(key)
		}
	}
	for i, s := range segs {
		switch s {
		case ".":
			segs[i] = "%2E"
		case "..":
			segs[i] = "%2E%2E"
		default:
			segs[i] = url.PathEscape(s)
		}
	}
	return strings.Join(segs, "/")
}

// parseETag parses the strong entity tag "N" the server sends as a version.
func parseETag(s string) (uint64, error) {
	if len(s) < 3 || s[0] != '"' || s[len(s)-1] != '"' {
		return 0, fmt.Errorf("client: malformed ETag %q", s)
	}
	v, err := strconv.ParseUint(s[1:len(s)-1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("client: malformed ETag %q", s)
	}
	return v, nil
}
