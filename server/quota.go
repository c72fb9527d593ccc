package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"

	"lambdadb/namespace"
	"lambdadb/shard"
)

// Quotas per namespace (docs/adr/0013-quotas.md).
//
// An admin sets a namespace's quota with PUT /v1/namespaces/{ns}/quota;
// it is stored in the SystemSpace under quotaPrefix (one hash tag: one
// shard) and every node reads all quotas, and every namespace's stored
// bytes (shard.Node.NamespaceBytes), again every Config.QuotaRefresh: a
// change made on another node takes effect here within that time (on the
// node that took the PUT, at once).
//
// enforceQuota, right after authorize (which chose the namespace), refuses
// with 429 quota_exceeded and Retry-After:
//
//   - ops_per_s: data requests (kv put/get/delete/scan, feed, query),
//   - invocations_per_s: POST /v1/functions/{name}/invoke,
//   - concurrency: invocations of the namespace running at once,
//   - stored_bytes: kv puts and function deploys once the namespace's
//     keys and values occupy at least its quota.
//
// Rates and concurrency are enforced per node: a client spread over N
// nodes may get up to N times them. An invocation a node forwards to
// another counts on both.

// Quota is a namespace's limits; 0 is unlimited.
type Quota struct {
	OpsPerS         int64 `json:"ops_per_s"`
	InvocationsPerS int64 `json:"invocations_per_s"`
	Concurrency     int64 `json:"concurrency"`
	StoredBytes     int64 `json:"stored_bytes"`
}

func (q Quota) unlimited() bool { return q == Quota{} }

// quotaPrefix starts the SystemSpace key of each namespace's quota.
const quotaPrefix = "quota/{quota}/"

// DefaultQuotaRefresh is how often a node re-reads quotas and stored bytes.
const DefaultQuotaRefresh = 2 * time.Second

// maxNamespaceLabels bounds the distinct namespace label values of the
// namespace metrics; later namespaces are counted as "other".
const maxNamespaceLabels = 1000

// Metric names of the namespace metrics.
const (
	MetricNamespaceRequests   = "lambdadb_namespace_requests_total"
	MetricNamespaceRejections = "lambdadb_namespace_quota_rejections_total"
	MetricNamespaceStored     = "lambdadb_namespace_stored_bytes"
)

// Names of the quotas, as answers and metrics name them.
const (
	quotaOps         = "ops_per_s"
	quotaInvocations = "invocations_per_s"
	quotaConcurrency = "concurrency"
	quotaStored      = "stored_bytes"
)

// quotas is a node's view of every namespace's quota and stored bytes, and
// its per-namespace limiters.
type quotas struct {
	node    *shard.Node
	refresh time.Duration

	mu     sync.Mutex
	usage  map[string]int64
	limits map[string]*nsLimits
	loaded time.Time // last refresh (zero: never)
	labels map[string]bool
	gauged map[string]bool // label values the stored-bytes gauge has
	puts   uint64          // quotas set through this node (see load)

	refreshing atomic.Bool

	requests   *prometheus.CounterVec
	rejections *prometheus.CounterVec
	stored     *prometheus.GaugeVec
}

// nsLimits is one namespace's limiters on this node.
type nsLimits struct {
	q       Quota // guarded by quotas.mu
	ops     *rate.Limiter
	inv     *rate.Limiter
	running atomic.Int64 // invocations in flight
}

func newLimiter(perS int64) *rate.Limiter {
	l := rate.NewLimiter(rate.Inf, 0)
	setRate(l, perS)
	return l
}

// setRate sets l to perS a second with a burst of one second's worth;
// 0 is unlimited.
func setRate(l *rate.Limiter, perS int64) {
	if perS <= 0 {
		l.SetLimit(rate.Inf)
		return
	}
	burst := int(min(perS, math.MaxInt32))
	if l.Limit() != rate.Limit(perS) {
		l.SetLimit(rate.Limit(perS))
	}
	if l.Burst() != burst {
		l.SetBurst(burst)
	}
}

func (s *Server) initQuotas(reg prometheus.Registerer, refresh time.Duration) error {
	if refresh <= 0 {
		refresh = DefaultQuotaRefresh
	}
	q := &quotas{node: s.node, refresh: refresh, usage: map[string]int64{},
		limits: map[string]*nsLimits{}, labels: map[string]bool{}, gauged: map[string]bool{}}
	c, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricNamespaceRequests,
		Help: "HTTP requests served after authorization, by namespace, route and status code.",
	}, []string{"namespace", "route", "code"}))
	if err != nil {
		return err
	}
	var ok1, ok2, ok3 bool
	q.requests, ok1 = c.(*prometheus.CounterVec)
	if c, err = register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricNamespaceRejections,
		Help: "Requests refused with 429 quota_exceeded, by namespace and quota.",
	}, []string{"namespace", "quota"})); err != nil {
		return err
	}
	q.rejections, ok2 = c.(*prometheus.CounterVec)
	if c, err = register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: MetricNamespaceStored,
		Help: "Bytes a namespace's keys and values occupy (one replica's worth), as this node last read them.",
	}, []string{"namespace"})); err != nil {
		return err
	}
	q.stored, ok3 = c.(*prometheus.GaugeVec)
	if !ok1 || !ok2 || !ok3 {
		return errors.New("server: registry holds incompatible namespace metrics")
	}
	s.quotas = q
	return nil
}

// label returns ns as a metric label value: "other" past the first
// maxNamespaceLabels namespaces seen.
func (q *quotas) label(ns string) string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.labelLocked(ns)
}

func (q *quotas) labelLocked(ns string) string {
	if q.labels[ns] {
		return ns
	}
	if len(q.labels) >= maxNamespaceLabels {
		return "other"
	}
	q.labels[ns] = true
	return ns
}

// state returns ns's limiters (nil when it has no quota), quota and stored bytes,
// and starts a refresh when the last is older than the refresh interval.
func (q *quotas) state(ns string) (*nsLimits, Quota, int64) {
	q.mu.Lock()
	stale := time.Since(q.loaded) >= q.refresh
	l, used := q.limits[ns], q.usage[ns]
	var set Quota
	if l != nil {
		set = l.q
	}
	q.mu.Unlock()
	if stale && q.refreshing.CompareAndSwap(false, true) {
		go func() {
			defer q.refreshing.Store(false)
			ctx, cancel := context.WithTimeout(context.Background(), max(q.refresh, 5*time.Second))
			defer cancel()
			_ = q.load(ctx)
		}()
	}
	return l, set, used
}

// load reads every quota and every namespace's stored bytes.
func (q *quotas) load(ctx context.Context) error {
	q.mu.Lock()
	puts := q.puts
	q.mu.Unlock()
	settings, err := q.read(ctx)
	if err != nil {
		return err
	}
	used, err := q.node.NamespaceBytes(ctx, shard.ReadOptions{Consistency: shard.Stale})
	if err != nil {
		return err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.usage, q.loaded = used, time.Now()
	// A quota set here while the read ran may be missing from it: keep
	// what the PUT applied until the next refresh.
	if q.puts == puts {
		for ns, set := range settings {
			q.applyLocked(ns, set)
		}
		for ns := range q.limits {
			if _, ok := settings[ns]; !ok {
				q.applyLocked(ns, Quota{})
			}
		}
	}
	seen := map[string]bool{}
	for ns, b := range used {
		lv := q.labelLocked(ns)
		if !seen[lv] {
			q.stored.WithLabelValues(lv).Set(0)
		}
		seen[lv] = true
		q.stored.WithLabelValues(lv).Add(float64(b))
	}
	for lv := range q.gauged {
		if !seen[lv] {
			q.stored.DeleteLabelValues(lv)
		}
	}
	q.gauged = seen
	return nil
}

// applyLocked makes set ns's quota on this node.
func (q *quotas) applyLocked(ns string, set Quota) {
	l := q.limits[ns]
	switch {
	case l == nil && set.unlimited():
		return
	case l == nil:
		l = &nsLimits{ops: newLimiter(set.OpsPerS), inv: newLimiter(set.InvocationsPerS)}
		q.limits[ns] = l
	case set.unlimited() && l.running.Load() == 0:
		delete(q.limits, ns)
	}
	setRate(l.ops, set.OpsPerS)
	setRate(l.inv, set.InvocationsPerS)
	l.q = set
}

// read returns every namespace's quota from the store.
func (q *quotas) read(ctx context.Context) (map[string]Quota, error) {
	out := map[string]Quota{}
	req := shard.ScanRequest{Prefix: quotaPrefix, Limit: shard.MaxScanLimit}
	for {
		res, err := q.node.ScanIn(ctx, shard.SystemSpace, req, shard.ReadOptions{})
		if err != nil {
			return nil, err
		}
		for _, it := range res.Items {
			var set Quota
			if json.Unmarshal(it.Value, &set) == nil {
				out[it.Key[len(quotaPrefix):]] = set
			}
		}
		if !res.More {
			return out, nil
		}
		req.Start = res.Next
	}
}

// quotaClass is what a route counts against.
type quotaClass uint8

const (
	quotaNone quotaClass = iota
	quotaOp
	quotaInvoke
)

func classOf(route string) (c quotaClass, stores bool) {
	switch route {
	case "kv_put":
		return quotaOp, true
	case "kv_get", "kv_delete", "kv_scan", "feed", "query", "console":
		return quotaOp, false
	case "fn_invoke":
		return quotaInvoke, false
	case "fn_deploy":
		return quotaNone, true
	}
	return quotaNone, false
}

// enforceQuota counts route's requests by namespace and refuses those
// over the namespace's quota. It runs after authorize, which puts the
// namespace on the context.
func (s *Server) enforceQuota(route string, h http.Handler) http.Handler {
	q := s.quotas
	class, stores := classOf(route)
	var counted sync.Map // namespace label → instrumented handler
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ns := namespace.From(r.Context())
		l, set, used := q.state(ns)
		if l == nil {
			h.ServeHTTP(w, r)
			return
		}
		if stores && set.StoredBytes > 0 && used >= set.StoredBytes {
			s.quotaExceeded(w, r, ns, quotaStored, q.refresh,
				fmt.Sprintf("stores %d bytes, its quota is %d; delete data to write again", used, set.StoredBytes))
			return
		}
		switch class {
		case quotaOp:
			if wait, ok := take(l.ops); !ok {
				s.quotaExceeded(w, r, ns, quotaOps, wait, fmt.Sprintf("its quota is %d requests a second on each node", set.OpsPerS))
				return
			}
		case quotaInvoke:
			if wait, ok := take(l.inv); !ok {
				s.countThrottle(r)
				s.quotaExceeded(w, r, ns, quotaInvocations, wait, fmt.Sprintf("its quota is %d invocations a second on each node", set.InvocationsPerS))
				return
			}
			n := l.running.Add(1)
			defer l.running.Add(-1)
			if c := set.Concurrency; c > 0 && n > c {
				s.countThrottle(r)
				s.quotaExceeded(w, r, ns, quotaConcurrency, time.Second, fmt.Sprintf("%d invocations are running, its quota is %d on each node", n-1, c))
				return
			}
		}
		h.ServeHTTP(w, r)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lv := q.label(namespace.From(r.Context()))
		c, ok := counted.Load(lv)
		if !ok {
			c, _ = counted.LoadOrStore(lv, promhttp.InstrumentHandlerCounter(
				q.requests.MustCurryWith(prometheus.Labels{"namespace": lv, "route": route}), inner))
		}
		c.(http.Handler).ServeHTTP(w, r)
	})
}

// countThrottle counts an invocation refused by a quota in its function's
// Stats.Throttles (as the engine counts those it refuses itself).
func (s *Server) countThrottle(r *http.Request) {
	if s.fns == nil {
		return
	}
	if stored, _, err := storedName(r); err == nil {
		s.fns.CountThrottle(r.Context(), stored)
	}
}

// take takes one event from l, or says how long until one is available.
func take(l *rate.Limiter) (time.Duration, bool) {
	now := time.Now()
	res := l.ReserveN(now, 1)
	if !res.OK() {
		return time.Second, false
	}
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return d, false
	}
	return 0, true
}

// quotaError is the body of a 429 quota_exceeded.
type quotaError struct {
	Error     string `json:"error"`
	Code      string `json:"code"`
	Namespace string `json:"namespace"`
	Quota     string `json:"quota"`
}

// quotaExceeded answers 429 quota_exceeded with Retry-After: retry in
// whole seconds, at least 1.
func (s *Server) quotaExceeded(w http.ResponseWriter, r *http.Request, ns, which string, retry time.Duration, why string) {
	s.quotas.rejections.WithLabelValues(s.quotas.label(ns), which).Inc()
	secs := max(int64(math.Ceil(retry.Seconds())), 1)
	msg := fmt.Sprintf("server: namespace %q is over its %s quota: %s", ns, which, why)
	s.log.Debug("request failed", "method", r.Method, "path", r.URL.Path, "status", http.StatusTooManyRequests,
		"code", "quota_exceeded", "namespace", ns, "quota", which)
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	writeJSON(w, http.StatusTooManyRequests, quotaError{Error: msg, Code: "quota_exceeded", Namespace: ns, Quota: which})
}

// Admin routes.

// NamespaceInfo is a namespace's quota and usage as the API answers it.
type NamespaceInfo struct {
	Namespace string         `json:"namespace"`
	Quota     Quota          `json:"quota"`
	Usage     NamespaceUsage `json:"usage"`
}

// NamespaceUsage is what a namespace uses.
type NamespaceUsage struct {
	// StoredBytes is what its keys and values occupy (one replica's worth).
	StoredBytes int64 `json:"stored_bytes"`
	// Running is its invocations in flight on the answering node.
	Running int64 `json:"running_on_node"`
}

const maxQuotaBody = 4 << 10

func (s *Server) putQuota(w http.ResponseWriter, r *http.Request) {
	if s.auth == nil {
		s.writeError(w, r, fmt.Errorf("%w: quotas are set by an admin: %w", errBadParameter, errSecureModeOff))
		return
	}
	if _, err := queryParams(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	ns := r.PathValue("ns")
	if err := namespace.Validate(ns); err != nil {
		s.writeError(w, r, fmt.Errorf("%w: %w", errBadParameter, err))
		return
	}
	var set Quota
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxQuotaBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&set); err != nil {
		s.writeError(w, r, fmt.Errorf("%w: want {\"ops_per_s\",\"invocations_per_s\",\"concurrency\",\"stored_bytes\"}: %v", errBadParameter, err))
		return
	}
	if set.OpsPerS < 0 || set.InvocationsPerS < 0 || set.Concurrency < 0 || set.StoredBytes < 0 {
		s.writeError(w, r, fmt.Errorf("%w: a quota must not be negative (0 is unlimited)", errBadParameter))
		return
	}
	op := shard.Op{Space: shard.SystemSpace, Key: quotaPrefix + ns, Delete: true}
	if !set.unlimited() {
		b, _ := json.Marshal(set)
		op = shard.Op{Space: shard.SystemSpace, Key: quotaPrefix + ns, Value: b}
	}
	if _, err := s.node.Batch(r.Context(), []shard.Op{op}, nil); err != nil {
		s.writeError(w, r, err)
		return
	}
	q := s.quotas
	q.mu.Lock()
	q.puts++
	q.applyLocked(ns, set)
	q.mu.Unlock()
	s.log.Info("namespace quota set", "namespace", ns, "quota", set, "by", principalOf(r.Context()).Accessor)
	s.getQuota(w, r)
}

func (s *Server) getQuota(w http.ResponseWriter, r *http.Request) {
	if _, err := queryParams(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	ns := r.PathValue("ns")
	if err := namespace.Validate(ns); err != nil {
		s.writeError(w, r, fmt.Errorf("%w: %w", errBadParameter, err))
		return
	}
	list, err := s.namespaces(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	info := NamespaceInfo{Namespace: ns}
	for _, i := range list {
		if i.Namespace == ns {
			info = i
		}
	}
	writeJSON(w, http.StatusOK, info)
}

func (s *Server) listNamespaces(w http.ResponseWriter, r *http.Request) {
	if _, err := queryParams(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	list, err := s.namespaces(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Namespaces []NamespaceInfo `json:"namespaces"`
	}{list})
}

// namespaces reads every namespace with a quota or stored data, fresh
// from the store, in name order.
func (s *Server) namespaces(ctx context.Context) ([]NamespaceInfo, error) {
	settings, err := s.quotas.read(ctx)
	if err != nil {
		return nil, err
	}
	used, err := s.node.NamespaceBytes(ctx, shard.ReadOptions{})
	if err != nil {
		return nil, err
	}
	byNS := map[string]*NamespaceInfo{}
	get := func(ns string) *NamespaceInfo {
		if byNS[ns] == nil {
			byNS[ns] = &NamespaceInfo{Namespace: ns}
		}
		return byNS[ns]
	}
	for ns, set := range settings {
		get(ns).Quota = set
	}
	for ns, b := range used {
		get(ns).Usage.StoredBytes = b
	}
	s.quotas.mu.Lock()
	for ns, l := range s.quotas.limits {
		if i := byNS[ns]; i != nil {
			i.Usage.Running = l.running.Load()
		}
	}
	s.quotas.mu.Unlock()
	out := make([]NamespaceInfo, 0, len(byNS))
	for _, i := range byNS {
		out = append(out, *i)
	}
	slices.SortFunc(out, func(a, b NamespaceInfo) int {
		switch {
		case a.Namespace < b.Namespace:
			return -1
		case a.Namespace > b.Namespace:
			return 1
		}
		return 0
	})
	return out, nil
}
