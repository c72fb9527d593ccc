package console

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"sync/atomic"
	"time"

	"lambdadb/shard"
)

//go:embed static templates
var files embed.FS

// ContentSecurityPolicy is sent with every console answer: only the node's
// own scripts, styles and images; no inline script, no eval, no framing.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; " +
	"form-action 'self'; frame-ancestors 'none'"

// Prefix is the path under which the console is served.
const Prefix = "/ui/"

// Config configures a Console.
type Config struct {
	// Node is the node whose view the pages show. Required.
	Node *shard.Node

	// CanRead reports whether the request may read keys with prefix
	// (within its namespace); the key browser refuses prefixes it does
	// not allow. Default: everything allowed (insecure mode).
	CanRead func(r *http.Request, prefix string) bool

	// Functions serves the functions pages (functions.go); nil: the node
	// runs without functions and those pages answer 404.
	Functions Functions

	// CanFunctions reports whether the request may use the function
	// route named route ("fn_list", "fn_get" or "fn_logs", as the API
	// names them); the functions pages show only what it allows.
	// Default: everything allowed (insecure mode).
	CanFunctions func(r *http.Request, route string) bool

	// Secure tells the pages the node runs in secure mode (shown in the
	// header).
	Secure bool

	// Logger receives template failures. Default: discard.
	Logger *slog.Logger

	// Triggers, when set, serves the triggers page (/ui/triggers) and
	// its buttons; nil: the page says triggers are off.
	Triggers Triggers
	// Query, when set, serves the query page (/ui/query).
	Query QueryFunc
}

// Console serves the pages and static assets under Prefix.
type Console struct {
	node    *shard.Node
	canRead func(*http.Request, string) bool
	secure  bool
	log     *slog.Logger
	tmpl    *template.Template
	static  http.Handler
	hashes  map[string]string // static file name → short content hash
	mux     *http.ServeMux

	fns          Functions
	canFunctions func(*http.Request, string) bool
	streams      atomic.Int64 // live log tails open
	streamLife   time.Duration
	logPoll      time.Duration
	triggers     Triggers
	query        QueryFunc
}

// New returns a Console for cfg.
func New(cfg Config) (*Console, error) {
	if cfg.Node == nil {
		return nil, errors.New("console: Config.Node is required")
	}
	if cfg.CanRead == nil {
		cfg.CanRead = func(*http.Request, string) bool { return true }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Console{node: cfg.Node, canRead: cfg.CanRead, secure: cfg.Secure, log: cfg.Logger,
		hashes: map[string]string{}, mux: http.NewServeMux(), triggers: cfg.Triggers, query: cfg.Query}
	if cfg.CanFunctions == nil {
		cfg.CanFunctions = func(*http.Request, string) bool { return true }
	}
	c.fns, c.canFunctions, c.streamLife, c.logPoll = cfg.Functions, cfg.CanFunctions, streamLife, logPoll
	static, err := fs.Sub(files, "static")
	if err != nil {
		return nil, err
	}
	err = fs.WalkDir(static, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(static, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		c.hashes[p] = hex.EncodeToString(sum[:6])
		return nil
	})
	if err != nil {
		return nil, err
	}
	c.static = http.StripPrefix(Prefix+"static/", http.FileServerFS(static))
	c.tmpl, err = template.New("").Funcs(template.FuncMap{"asset": c.asset,
		"us": fmtUS, "gbs": fmtGBs, "bytes": fmtBytes, "fnURL": fnURL, "errorCodes": errorCodes, "errorRate": errorRate}).ParseFS(files, "templates/*.html")
	if err != nil {
		return nil, err
	}
	c.mux.HandleFunc("GET "+Prefix+"{$}", c.clusterPage)
	c.mux.HandleFunc("GET "+Prefix+"cluster", c.clusterFragment)
	c.mux.HandleFunc("GET "+Prefix+"keys", c.keysPage)
	c.mux.HandleFunc("GET "+Prefix+"functions", c.functionsPage)
	c.mux.HandleFunc("GET "+Prefix+"functions-live", c.functionsFragment)
	c.mux.HandleFunc("GET "+Prefix+"functions/{name}", c.functionPage)
	c.mux.HandleFunc("GET "+Prefix+"functions/{name}/live", c.functionFragment)
	c.mux.HandleFunc("GET "+Prefix+"functions/{name}/series", c.functionSeries)
	c.mux.HandleFunc("GET "+Prefix+"functions/{name}/logs/stream", c.logStream)
	c.mux.HandleFunc("GET "+Prefix+"static/", c.serveStatic)
	c.mux.HandleFunc("GET "+Prefix+"triggers", c.triggersPage)
	c.mux.HandleFunc("GET "+Prefix+"triggers/live", c.triggersFragment)
	for pattern, action := range TriggerActions {
		c.mux.HandleFunc(pattern, c.triggerAction(action))
	}
	c.mux.HandleFunc("GET "+Prefix+"query", c.queryPage)
	c.mux.HandleFunc(Prefix, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "404 page not found", http.StatusNotFound)
	})
	return c, nil
}

// ServeHTTP implements http.Handler for the paths under Prefix.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	c.mux.ServeHTTP(w, r)
}

// asset returns the URL of static file name, with its content hash so
// that a new binary's assets are fetched again despite the long caching.
func (c *Console) asset(name string) string {
	return Prefix + "static/" + name + "?v=" + c.hashes[name]
}

func (c *Console) serveStatic(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, Prefix+"static/")
	if _, ok := c.hashes[path.Clean(name)]; !ok || name == "" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	c.static.ServeHTTP(w, r)
}

// render executes template name with data; a failure before anything is
// written answers 500.
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, data any) {
	var b strings.Builder
	if err := c.tmpl.ExecuteTemplate(&b, name, data); err != nil {
		c.log.Error("console: template", "template", name, "path", r.URL.Path, "err", err)
		http.Error(w, "500 internal error rendering the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}

// page is what every full page's layout needs.
type page struct {
	Title     string
	Nav       string // "cluster", "keys" or "functions"
	Node      string
	Namespace string
	Secure    bool
}
