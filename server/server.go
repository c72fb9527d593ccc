package server

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"lambdadb/auth"
	"lambdadb/changefeed"
	"lambdadb/console"
	"lambdadb/lambda"
	"lambdadb/scatter"
	"lambdadb/shard"
)

// DefaultMaxValueBytes is the default bound on a PUT body (1 MiB).
const DefaultMaxValueBytes = 1 << 20

// Config configures a Server. The zero value of each optional field selects
// its default.
type Config struct {
	// Node serves the data. Required. The Server does not close it.
	Node *shard.Node

	// Functions runs handlers; without it the /v1/functions routes
	// answer 404. The Server does not close it.
	Functions *lambda.Engine

	// Triggers manages insert triggers; without it the /v1/triggers routes
	// answer 404. The Server does not close it.
	Triggers *changefeed.Triggers

	// Query runs POST /v1/query. Default: an executor over Node and
	// Functions with scatter's defaults (but MaxQueries and
	// MaxQueryGroups), its sub-query route registered on Node's internal
	// RPC.
	Query *scatter.Executor

	// MaxQueries bounds the queries this node roots at once when Query is
	// nil (scatter.Config.MaxQueries); more get 429 too_many_requests.
	// Default: scatter.DefaultMaxQueries (32).
	MaxQueries int

	// MaxQueryGroups bounds the groups of a built-in aggregate's answer
	// when Query is nil (scatter.Config.MaxGroups); a query with more gets
	// 400 too_many_groups. Default: scatter.DefaultMaxGroups (10000).
	MaxQueryGroups int

	// PeerClient makes requests to other nodes' HTTP API (forwarded
	// invocations, cluster-wide function stats); each request carries its
	// own deadline. Default: a client without an overall timeout.
	PeerClient *http.Client
	// PeerScheme is the URL scheme of requests to other nodes' HTTP API:
	// "http", or "https" for nodes in secure mode (PeerClient must then
	// trust the cluster's CAs and present this node's certificate).
	// Default: "http".
	PeerScheme string

	// MaxValueBytes bounds the body of PUT /v1/kv/{key}; larger bodies get
	// 413 value_too_large before the node sees them.
	// Default: DefaultMaxValueBytes (1 MiB).
	MaxValueBytes int

	// Registry receives the Go and process collectors and the server's
	// request metrics (collectors already registered there are reused),
	// and is served at /metrics. Pass the registry given to
	// shard.Config.Registerer to expose the node's metrics too.
	// Default: a new registry.
	Registry *prometheus.Registry

	// BodyIdleTimeout fails the read of a request body that sends nothing
	// for this long: the answer is 408 body_timeout and the connection is
	// closed. Default: DefaultBodyIdleTimeout (10 s).
	BodyIdleTimeout time.Duration

	// BodyTimeout bounds the arrival of a whole request body, counted from
	// its headers; beyond it, as BodyIdleTimeout.
	// Default: DefaultBodyTimeout (2 min).
	BodyTimeout time.Duration

	// MaxInflightBodyBytes is the node's budget of request-body bytes in
	// flight: a request with a body reserves its Content-Length (a chunked
	// one its route's maximum, cut to its size once read) until its
	// handler returns. A request that cannot reserve within
	// InflightBodyWait gets 503 overloaded with Retry-After: 1.
	// Default: DefaultMaxInflightBodyBytes (256 MiB).
	MaxInflightBodyBytes int64

	// MaxFeedSubscribers bounds the feed reads (long polls and WebSocket
	// streams) open on the node at once; beyond it a read gets 503
	// overloaded with Retry-After.
	// Default: changefeed.DefaultMaxSubscribers (4096).
	MaxFeedSubscribers int

	// MaxFeedSubscribersPerClient bounds them per client address; beyond
	// it a read gets 429 too_many_subscribers.
	// Default: changefeed.DefaultMaxSubscribersPerClient (1024).
	MaxFeedSubscribersPerClient int

	// FeedWriteTimeout bounds how long one WebSocket message may take to
	// leave: a consumer that does not read for this long is disconnected
	// (it resumes from the cursor of the last message it read).
	// Default: DefaultFeedWriteTimeout (10 s).
	FeedWriteTimeout time.Duration

	// MaxStreamSendBytes is the node's budget of WebSocket feed message
	// bytes being sent: a stream reserves its next message before encoding
	// it and waits while the budget is full, so consumers that stop
	// reading hold at most this much until --feed-write-timeout drops
	// them. Default: DefaultStreamSendBytes (16 MiB).
	MaxStreamSendBytes int64

	// InflightBodyWait is how long a request waits for budget.
	// Default: DefaultInflightBodyWait (1 s).
	InflightBodyWait time.Duration

	// DeployCompileWait is how long a deploy waits, after it commits, for
	// the members it sees up to report the new version compiled (each
	// compiles it in the background when told of the deploy, with
	// Functions' PrecompileConcurrency) before it answers; a negative
	// value answers at once. Default: DefaultDeployCompileWait (10 s).
	DeployCompileWait time.Duration

	// Auth, when set, turns on secure mode: every route but /healthz and
	// POST /v1/auth/bootstrap needs a token its policy accepts (auth.go),
	// and requests act in their token's namespace. Default: nil, insecure
	// mode (everything allowed, namespace default).
	Auth *auth.Store

	// Denials receives refused requests (GET /v1/auth/log).
	// Default: a new log of the last 256.
	Denials *auth.Denials

	// AllowedOrigins are the browser origins (scheme://host[:port]) other
	// than the node's own that may open a WebSocket feed or make a
	// state-changing request. Default: none.
	AllowedOrigins []string

	// Logger receives request failures (5xx at Error level, others at
	// Debug). Default: discard.
	Logger *slog.Logger

	// QuotaRefresh is how often the node re-reads the namespaces' quotas
	// and stored bytes (quota.go): a quota set on another node takes
	// effect here within it. Default: DefaultQuotaRefresh (2 s).
	QuotaRefresh time.Duration
}

// Server is the HTTP API handler. Create it with New.
type Server struct {
	node     *shard.Node
	feed     *changefeed.Feed
	feedSend time.Duration // FeedWriteTimeout

	slowConsumers prometheus.Counter // streams dropped on a failed send
	streamSend    *budget            // stream message bytes in flight
	feedEnc       *encCache          // encoded changes shared by answers
	triggers      *changefeed.Triggers
	fns           *lambda.Engine
	deployWait    time.Duration
	query         *scatter.Executor
	peers         *http.Client
	peerScheme    string // "http" or "https"
	maxValue      int
	body          bodyLimits
	log           *slog.Logger
	auth          *auth.Store
	denials       *auth.Denials
	denied        *prometheus.CounterVec
	origins       map[string]bool
	mux           *http.ServeMux
	upgrader      *websocket.Upgrader

	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	quotas   *quotas // per-namespace quotas and metrics (quota.go)

	// routeNames are the names of the routes registered (for tests).
	routeNames []string

	// invalidPath answers /v1/kv/ paths that path cleaning would rewrite.
	invalidPath http.Handler
	// unmatchedRoute answers what no route matches.
	unmatchedRoute http.Handler
}

// Close stops what the server runs in the background (the feed's shared
// tails); call it after the HTTP server has shut down.
func (s *Server) Close() { s.feed.Close() }

// Metric names exported by a Server.
const (
	MetricRequests = "lambdadb_http_requests_total"
	MetricDuration = "lambdadb_http_request_duration_seconds"
)

// New validates cfg, applies defaults and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Node == nil {
		return nil, errors.New("server: Config.Node is required")
	}
	if cfg.MaxValueBytes < 0 {
		return nil, fmt.Errorf("server: negative MaxValueBytes %d", cfg.MaxValueBytes)
	}
	if cfg.MaxValueBytes == 0 {
		cfg.MaxValueBytes = DefaultMaxValueBytes
	}
	if cfg.MaxQueries < 0 || cfg.MaxQueryGroups < 0 {
		return nil, fmt.Errorf("server: negative MaxQueries %d or MaxQueryGroups %d", cfg.MaxQueries, cfg.MaxQueryGroups)
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.PeerClient == nil {
		cfg.PeerClient = &http.Client{}
	}
	switch cfg.PeerScheme {
	case "":
		cfg.PeerScheme = "http"
	case "http", "https":
	default:
		return nil, fmt.Errorf("server: Config.PeerScheme %q: want http or https", cfg.PeerScheme)
	}
	if cfg.FeedWriteTimeout <= 0 {
		cfg.FeedWriteTimeout = DefaultFeedWriteTimeout
	}
	if cfg.MaxStreamSendBytes <= 0 {
		cfg.MaxStreamSendBytes = DefaultStreamSendBytes
	}
	if cfg.Denials == nil {
		cfg.Denials = auth.NewDenials(0)
	}
	body, err := newBodyLimits(&cfg, cfg.Registry)
	if err != nil {
		return nil, err
	}
	s := &Server{
		node: cfg.Node,
		feed: changefeed.NewFeed(changefeed.FeedConfig{Source: cfg.Node,
			MaxSubscribers: cfg.MaxFeedSubscribers, MaxSubscribersPerClient: cfg.MaxFeedSubscribersPerClient}),
		feedSend:   cfg.FeedWriteTimeout,
		streamSend: &budget{size: cfg.MaxStreamSendBytes},
		feedEnc:    newEncCache(),
		triggers:   cfg.Triggers,
		fns:        cfg.Functions,
		deployWait: cfg.DeployCompileWait,
		peers:      cfg.PeerClient,
		peerScheme: cfg.PeerScheme,
		maxValue:   cfg.MaxValueBytes,
		body:       body,
		log:        cfg.Logger,
		auth:       cfg.Auth,
		denials:    cfg.Denials,
		origins:    map[string]bool{},
		mux:        http.NewServeMux(),
	}
	for _, o := range cfg.AllowedOrigins {
		o = strings.ToLower(strings.TrimSuffix(o, "/"))
		if err := http.NewCrossOriginProtection().AddTrustedOrigin(o); err != nil {
			return nil, fmt.Errorf("server: AllowedOrigins: %w", err)
		}
		s.origins[o] = true
	}
	if s.deployWait == 0 {
		s.deployWait = DefaultDeployCompileWait
	}
	if cfg.Functions != nil {
		cfg.Node.HandleInternal(precompilePath, http.HandlerFunc(s.servePrecompile))
	}
	s.upgrader = s.newUpgrader()
	s.query = cfg.Query
	if s.query == nil {
		sc := scatter.Config{Cluster: cfg.Node, Logger: cfg.Logger, Registerer: cfg.Registry,
			MaxQueries: cfg.MaxQueries, MaxGroups: cfg.MaxQueryGroups}
		if cfg.Functions != nil {
			sc.Functions = cfg.Functions
		}
		x, err := scatter.New(sc)
		if err != nil {
			return nil, err
		}
		cfg.Node.HandleInternal(scatter.RPCPath, x.InternalHandler())
		s.query = x
	}
	if err := s.registerMetrics(cfg.Registry); err != nil {
		return nil, err
	}
	if err := s.registerTriggerMetrics(cfg.Registry); err != nil {
		return nil, err
	}
	if err := s.initQuotas(cfg.Registry, cfg.QuotaRefresh); err != nil {
		return nil, err
	}

	metrics := promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{Registry: cfg.Registry})
	ui, err := console.New(console.Config{Node: cfg.Node, Secure: cfg.Auth != nil, Logger: cfg.Logger,
		Triggers: s.consoleTriggersOf(), Query: s.consoleQuery,
		CanRead: func(r *http.Request, prefix string) bool {
			p := principalOf(r.Context())
			return p == nil || rangeAllowed(p, auth.KVRead, prefix, "", "")
		},
		Functions:    s.consoleFns(),
		CanFunctions: canFunctions,
	})
	if err != nil {
		return nil, err
	}
	routes := []route{
		{"PUT /v1/kv/{key...}", "kv_put", http.HandlerFunc(s.putKey)},
		{"GET /v1/kv/{key...}", "kv_get", http.HandlerFunc(s.getKey)},
		{"DELETE /v1/kv/{key...}", "kv_delete", http.HandlerFunc(s.deleteKey)},
		{"GET /v1/kv", "kv_scan", http.HandlerFunc(s.scan)},
		{"GET /v1/feed", "feed", http.HandlerFunc(s.getFeed)},
		{"GET /v1/cluster", "cluster", http.HandlerFunc(s.cluster)},
		{"GET /v1/cluster/moves", "cluster_moves", http.HandlerFunc(s.clusterMoves)},
		{"POST /v1/cluster/rebalance", "cluster_rebalance", http.HandlerFunc(s.rebalance)},
		{"POST /v1/cluster/nodes/{id}/decommission", "node_decommission", http.HandlerFunc(s.decommissionNode)},
		{"DELETE /v1/cluster/nodes/{id}", "node_remove", http.HandlerFunc(s.removeNode)},
		{"POST /v1/query", "query", http.HandlerFunc(s.runQuery)},
		{"GET /healthz", "healthz", http.HandlerFunc(s.healthz)},
		{"POST /v1/auth/bootstrap", "auth_bootstrap", http.HandlerFunc(s.bootstrap)},
		{"GET /v1/auth/log", "auth_log", http.HandlerFunc(s.authLog)},
		{"POST /v1/tokens", "token_create", http.HandlerFunc(s.createToken)},
		{"GET /v1/tokens", "token_list", http.HandlerFunc(s.listTokens)},
		{"DELETE /v1/tokens/{accessor}", "token_revoke", http.HandlerFunc(s.revokeToken)},
		{"PUT /v1/namespaces/{ns}/quota", "ns_quota_put", http.HandlerFunc(s.putQuota)},
		{"GET /v1/namespaces/{ns}/quota", "ns_quota_get", http.HandlerFunc(s.getQuota)},
		{"GET /v1/namespaces", "ns_list", http.HandlerFunc(s.listNamespaces)},
		{"GET /metrics", "metrics", metrics},
		// The web console (package console): its pages, and its static
		// assets, which hold nothing of the cluster's and need no token.
		{"GET " + console.Prefix, "console", ui},
		{"GET " + console.Prefix + "static/", "console_static", ui},
		{"GET " + console.Prefix + "login", "console_login", http.HandlerFunc(s.loginPage)},
		{"POST " + console.Prefix + "login", "console_login", http.HandlerFunc(s.login)},
		{"POST " + console.Prefix + "logout", "console_logout", http.HandlerFunc(s.logout)},
	}
	if s.triggers != nil {
		routes = append(routes,
			route{"PUT /v1/triggers/{name}", "trigger_put", http.HandlerFunc(s.putTrigger)},
			route{"GET /v1/triggers", "trigger_list", http.HandlerFunc(s.listTriggers)},
			route{"GET /v1/triggers/{name}", "trigger_get", http.HandlerFunc(s.getTrigger)},
			route{"DELETE /v1/triggers/{name}", "trigger_delete", http.HandlerFunc(s.deleteTrigger)},
			route{"GET /v1/triggers/{name}/dead", "trigger_dead", http.HandlerFunc(s.deadLetters)},
			route{"POST /v1/triggers/{name}/pause", "trigger_pause", http.HandlerFunc(s.pauseTrigger)},
			route{"POST /v1/triggers/{name}/resume", "trigger_resume", http.HandlerFunc(s.resumeTrigger)},
			route{"POST /v1/triggers/{name}/dead/{id}/replay", "trigger_dead_replay", http.HandlerFunc(s.replayDeadLetter)},
			route{"POST /v1/triggers/{name}/dead/replay", "trigger_dead_replay", http.HandlerFunc(s.replayDeadLetters)},
			route{"DELETE /v1/triggers/{name}/dead/{id}", "trigger_dead_drop", http.HandlerFunc(s.dropDeadLetter)},
		)
		// The console's trigger buttons (POST forms), each under a route
		// with its API action's policy.
		for pattern, action := range console.TriggerActions {
			routes = append(routes, route{pattern, consoleActionRoutes[action], ui})
		}
	}
	if s.fns != nil {
		routes = append(routes,
			route{"PUT /v1/functions/{name}", "fn_deploy", http.HandlerFunc(s.deployFunction)},
			route{"GET /v1/functions", "fn_list", http.HandlerFunc(s.listFunctions)},
			route{"GET /v1/functions/{name}", "fn_get", http.HandlerFunc(s.getFunction)},
			route{"DELETE /v1/functions/{name}", "fn_delete", http.HandlerFunc(s.deleteFunction)},
			route{"GET /v1/functions/{name}/logs", "fn_logs", http.HandlerFunc(s.functionLogs)},
			route{"GET /v1/functions/{name}/series", "fn_series", http.HandlerFunc(s.functionSeries)},
			route{"POST /v1/functions/{name}/invoke", "fn_invoke", http.HandlerFunc(s.invokeFunction)},
		)
	}
	// Fallbacks give JSON 404/405 answers. "/v1/kv" has its own so that
	// ServeMux does not redirect, say, PUT /v1/kv to the key route.
	for _, p := range fallbackPatterns {
		routes = append(routes, route{p, "unmatched", http.HandlerFunc(s.unmatched)})
	}
	s.routeNames = make([]string, 0, len(routes))
	for _, rt := range routes {
		s.routeNames = append(s.routeNames, rt.name)
		s.mux.Handle(rt.pattern, s.instrument(rt.name, s.crossOrigin(s.limitBody(s.maxBody(rt.name), s.authorize(rt.name, s.enforceQuota(rt.name, clientRequest(rt.h)))))))
	}
	s.invalidPath = s.instrument("kv_invalid_path", s.crossOrigin(s.limitBody(0, s.authorize("kv_invalid_path", http.HandlerFunc(s.rejectPath)))))
	s.unmatchedRoute = s.instrument("unmatched", s.crossOrigin(s.limitBody(0, s.authorize("unmatched", http.HandlerFunc(s.unmatched)))))
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodConnect || r.RequestURI == "*":
		// ServeMux answers these itself, in plain text (a 404 for
		// CONNECT, an empty 400 for the target "*").
		s.unmatchedRoute.ServeHTTP(w, r)
	case isKeyPath(r.URL.EscapedPath()) && !isCleanPath(r.URL.EscapedPath()):
		// ServeMux would redirect to the cleaned path, which names a
		// different key; refuse instead.
		s.invalidPath.ServeHTTP(w, r)
	default:
		s.mux.ServeHTTP(w, r)
	}
}

func (s *Server) registerMetrics(reg *prometheus.Registry) error {
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if _, err := register(reg, c); err != nil {
			return err
		}
	}
	requests, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricRequests,
		Help: "HTTP requests served, by route and status code.",
	}, []string{"route", "code"}))
	if err != nil {
		return err
	}
	duration, err := register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    MetricDuration,
		Help:    "HTTP request latency in seconds, by route and status code.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 19), // 100µs .. ~26s
	}, []string{"route", "code"}))
	if err != nil {
		return err
	}
	feed := s.feed
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "lambdadb_feed_subscribers",
			Help: "Feed reads (long polls and WebSocket streams) open on this node."},
			func() float64 { return float64(feed.Stats().Subscribers) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "lambdadb_feed_tail_bytes",
			Help: "Bytes of recent changes held by this node's shared feed tails."},
			func() float64 { return float64(feed.Stats().TailBytes) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "lambdadb_feed_tail_reads_total",
			Help: "Reads of the shards' feeds by this node's shared tails."},
			func() float64 { return float64(feed.Stats().TailReads) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "lambdadb_feed_catchup_reads_total",
			Help: "Feed reads from storage for subscribers older than the shared tails."},
			func() float64 { return float64(feed.Stats().CatchUpReads) }),
	} {
		if _, err := register(reg, c); err != nil {
			return err
		}
	}
	sendGauge, err := register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "lambdadb_feed_stream_bytes_in_flight",
		Help: "WebSocket feed message bytes reserved in the node's send budget.",
	}))
	if err != nil {
		return err
	}
	sg, ok := sendGauge.(prometheus.Gauge)
	if !ok {
		return errors.New("server: registry holds an incompatible lambdadb_feed_stream_bytes_in_flight")
	}
	s.streamSend.gauge = sg
	dropped, err := register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "lambdadb_feed_streams_dropped_total",
		Help: "WebSocket feed streams dropped because a message could not be sent in time (the consumer stopped reading or went away).",
	}))
	if err != nil {
		return err
	}
	denied, err := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lambdadb_auth_denials_total",
		Help: "Requests refused by authentication (401) or authorization (403), by route and status.",
	}, []string{"route", "code"}))
	if err != nil {
		return err
	}
	var ok4 bool
	if s.denied, ok4 = denied.(*prometheus.CounterVec); !ok4 {
		return errors.New("server: registry holds an incompatible lambdadb_auth_denials_total")
	}
	var ok1, ok2, ok3 bool
	s.slowConsumers, ok3 = dropped.(prometheus.Counter)
	s.requests, ok1 = requests.(*prometheus.CounterVec)
	s.duration, ok2 = duration.(*prometheus.HistogramVec)
	if !ok1 || !ok2 || !ok3 {
		return errors.New("server: registry holds incompatible request metrics")
	}
	return nil
}

// register registers c, or returns the equal collector already registered.
func register(reg prometheus.Registerer, c prometheus.Collector) (prometheus.Collector, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			return are.ExistingCollector, nil
		}
		return nil, fmt.Errorf("server: register metrics: %w", err)
	}
	return c, nil
}

func (s *Server) instrument(route string, h http.Handler) http.Handler {
	labels := prometheus.Labels{"route": route}
	return promhttp.InstrumentHandlerDuration(s.duration.MustCurryWith(labels),
		promhttp.InstrumentHandlerCounter(s.requests.MustCurryWith(labels), h))
}

// healthz takes no query parameters but, unlike the API routes, ignores
// any it is given: probes and scrapers may add their own (as /metrics).
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, struct {
		Status string `json:"status"`
		Node   string `json:"node"`
	}{"ok", s.node.ID()})
}

func (s *Server) cluster(w http.ResponseWriter, r *http.Request) {
	if _, err := queryParams(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.node.Cluster())
}

// route is a ServeMux pattern with the name used in metric labels.
type route struct {
	pattern, name string
	h             http.Handler
}

// fallbackPatterns are the patterns served by unmatched.
var fallbackPatterns = []string{"/", "/v1/kv"}

// probeMethods are the methods tried to build a 405's Allow header.
var probeMethods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
	http.MethodPatch, http.MethodDelete, http.MethodOptions,
}

// unmatched answers requests no route matched: 405 with an Allow header
// when the path has routes for other methods, else 404.
func (s *Server) unmatched(w http.ResponseWriter, r *http.Request) {
	if r.RequestURI == "*" {
		s.writeError(w, r, fmt.Errorf("%w: the request target * names no resource", errBadRequest))
		return
	}
	if r.Method == http.MethodConnect {
		s.writeError(w, r, fmt.Errorf("%w: no route for CONNECT %s", errNotFound, r.RequestURI))
		return
	}
	var allow []string
	for _, m := range probeMethods {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := s.mux.Handler(probe); pattern != "" && !slices.Contains(fallbackPatterns, pattern) {
			allow = append(allow, m)
		}
	}
	if strings.HasPrefix(r.URL.Path, "/v1/kv") {
		tok, _, _ := requestSession(r) // data path: echo a valid token
		setSession(w, tok)
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		s.writeError(w, r, fmt.Errorf("%w: %s %s", errMethodNotAllowed, r.Method, r.URL.Path))
		return
	}
	s.writeError(w, r, fmt.Errorf("%w: no route for %s %s", errNotFound, r.Method, r.URL.Path))
}

func (s *Server) rejectPath(w http.ResponseWriter, r *http.Request) {
	tok, _, _ := requestSession(r) // echo the request's token if it is valid
	setSession(w, tok)
	s.writeError(w, r, fmt.Errorf(
		"%w: empty, \".\" and \"..\" path segments must be escaped (%%2F, %%2E)", shard.ErrInvalidKey))
}

// clientRequest marks the request's context as a client's, so the node
// admits the reads and writes it makes under its limits
// (shard.Config.MaxInflightWrites and MaxInflightReads); the node's own
// work (trigger deliveries, checkpoints) is not subject to them.
func clientRequest(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(shard.AdmitAsClient(r.Context())))
	})
}
