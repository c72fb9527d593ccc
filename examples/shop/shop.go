// Package shop is a small web shop on lambdadb: the pages and JSON API of
// examples/shop/cmd/shop. See examples/shop/README.md.
//
// Placing an order reserves stock with the shop-reserve handler, invoked
// next to the product's stock key, then stores the order under the
// customer's hash tag. Two triggers on orders/ keep, per customer, the
// order count and total (shop-totals, exactly once) and, per product, a
// marker per order (shop-sold). The analytics page runs POST /v1/query:
// revenue by region and units by product (sum … group_by), the top
// customers (topk) and a histogram of order sizes (shop-sizes, a Leaf and
// a Combine). The live page follows orders/ through the change feed.
// Each browser (or API caller) carries its lambdadb session token, so it
// reads its own orders on any node right after placing them.
package shop

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"lambdadb/client"
	"lambdadb/examples/shop/model"
)

// Product is an article of the catalog.
type Product struct {
	Name  string  `json:"name"`
	Price float64 `json:"price"`
	Stock int     `json:"stock"` // initial stock, set when the product has none
}

// DefaultCatalog is the catalog of the demo.
var DefaultCatalog = []Product{
	{"lamp", 24.50, 400}, {"mug", 7.90, 800}, {"notebook", 4.25, 1000}, {"pen", 1.20, 2000},
	{"rucksack", 59.00, 150}, {"teapot", 32.00, 200}, {"umbrella", 18.75, 300},
}

// Regions are the regions the order form offers.
var Regions = []string{"eu", "us", "apac", "latam"}

// The functions and triggers the shop deploys.
const (
	FnReserve = "shop-reserve"
	FnTotals  = "shop-totals"
	FnSold    = "shop-sold"
	FnSizes   = "shop-sizes"
)

// Handlers are the shop's handler modules, by function name: the file
// each is read from (Config.Handlers) is <name>.wasm.
var Handlers = []string{FnReserve, FnTotals, FnSold, FnSizes}

// Config configures a Shop.
type Config struct {
	// Nodes are the lambdadb nodes' base URLs ("http://127.0.0.1:7001");
	// the first is the client's base, the others its fallbacks.
	Nodes []string
	// Handlers is the folder holding shop-*.wasm (make examples writes
	// them to bin/examples); Setup deploys each whose bytes differ from
	// the deployed one. "": Setup deploys nothing.
	Handlers string
	// Catalog: default DefaultCatalog.
	Catalog []Product
	// HTTPClient for lambdadb; default a new one.
	HTTPClient *http.Client
	Logger     *slog.Logger
}

// Shop serves the pages and the API.
type Shop struct {
	cfg     Config
	cl      *client.Client // no session of its own is relied on: requests carry the caller's
	log     *slog.Logger
	catalog map[string]Product
	live    *hub
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

// New returns a Shop; call Setup before serving, Close at the end.
func New(cfg Config) (*Shop, error) {
	if len(cfg.Nodes) == 0 {
		return nil, errors.New("shop: no lambdadb nodes")
	}
	for i, n := range cfg.Nodes {
		if !strings.Contains(n, "://") {
			cfg.Nodes[i] = "http://" + n
		}
	}
	if cfg.Catalog == nil {
		cfg.Catalog = DefaultCatalog
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cl, err := client.New(cfg.Nodes[0], client.WithHTTPClient(cfg.HTTPClient))
	if err != nil {
		return nil, err
	}
	s := &Shop{cfg: cfg, cl: cl, log: cfg.Logger, catalog: map[string]Product{}}
	for _, p := range cfg.Catalog {
		if !model.ValidName(p.Name) {
			return nil, fmt.Errorf("shop: product name %q", p.Name)
		}
		s.catalog[p.Name] = p
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	s.live = newHub()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.follow(ctx)
	}()
	return s, nil
}

// Close stops following the feed and closes live pages.
func (s *Shop) Close() {
	s.stop()
	s.live.close()
	s.wg.Wait()
}

// Setup deploys the handlers (Config.Handlers), creates the triggers
// when absent and the stock of every product that has none.
func (s *Shop) Setup(ctx context.Context) error {
	if s.cfg.Handlers != "" {
		// Two at a time: each deploy waits for every node to compile it,
		// and compiling is CPU-bound.
		errs := make([]error, len(Handlers))
		var wg sync.WaitGroup
		slots := make(chan struct{}, 2)
		for i, name := range Handlers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				slots <- struct{}{}
				defer func() { <-slots }()
				errs[i] = s.deploy(ctx, name)
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return err
		}
	}
	for _, t := range []struct{ name, fn string }{{FnTotals, FnTotals}, {FnSold, FnSold}} {
		if _, err := s.cl.TriggerStatus(ctx, t.name); err == nil {
			continue
		} else if !errors.Is(err, client.ErrNotFound) {
			return fmt.Errorf("shop: trigger %s: %w", t.name, err)
		}
		// From the beginning: orders stored before the trigger count too
		// (totals skips the versions it counted, markers are idempotent).
		_, err := s.cl.CreateTrigger(ctx, t.name, client.Trigger{Function: t.fn, Prefix: model.OrdersPrefix,
			MaxWaitMS: client.Int(20), Start: client.CursorBeginning})
		if err != nil {
			return fmt.Errorf("shop: trigger %s: %w", t.name, err)
		}
		s.log.Info("created trigger", "trigger", t.name)
	}
	for _, p := range s.cfg.Catalog {
		_, err := s.cl.Put(ctx, model.StockKey(p.Name), []byte(strconv.Itoa(p.Stock)), client.IfNoneMatch())
		if err != nil && !errors.Is(err, client.ErrPrecondition) {
			return fmt.Errorf("shop: stock of %s: %w", p.Name, err)
		}
	}
	return nil
}

// deploy deploys handler name from Config.Handlers unless the same bytes
// are deployed already.
func (s *Shop) deploy(ctx context.Context, name string) error {
	b, err := os.ReadFile(filepath.Join(s.cfg.Handlers, name+".wasm"))
	if err != nil {
		return fmt.Errorf("shop: %w (build the handlers with make examples)", err)
	}
	sum := sha256.Sum256(b)
	if f, err := s.cl.Function(ctx, name); err == nil && f.SHA256 == hex.EncodeToString(sum[:]) && f.TimeoutMS == 10000 && f.MaxInstances == 8 {
		return nil
	}
	// 10 s rather than the default 1 s, and at most 8 sandboxes per node:
	// at a sale, many buyers of one product call at once; rather than
	// start a sandbox for each (cold, at first) and have them all retry
	// their compare-and-set behind one another, lambdadb queues the calls
	// beyond 8 for the next free sandbox.
	if _, err := s.cl.Deploy(ctx, name, b, client.DeployOptions{TimeoutMS: 10000, MaxInstances: 8}); err != nil {
		return fmt.Errorf("shop: deploy %s: %w", name, err)
	}
	s.log.Info("deployed", "function", name)
	return nil
}

// Errors of PlaceOrder.
var (
	ErrOutOfStock = errors.New("shop: out of stock")
	ErrInvalid    = errors.New("shop: invalid order")
)

// newID returns an order id that sorts by time: 16 hex digits of the
// clock in ns, then 4 random ones.
func newID() string {
	var r [2]byte
	_, _ = rand.Read(r[:])
	return fmt.Sprintf("%016x-%s", time.Now().UnixNano(), hex.EncodeToString(r[:]))
}

// session returns a client for the caller's session (token "" : a new
// one).
func (s *Shop) session(token string) *client.Client {
	c, err := s.cl.WithSession(token)
	if err != nil {
		c, _ = s.cl.WithSession("") // a malformed token starts afresh
	}
	return c
}

// PlaceOrder reserves the stock of o and stores it, in the session of
// token; it returns the order as stored and the session's token, which
// covers the order. ErrOutOfStock (with the units left) when the stock
// does not suffice.
func (s *Shop) PlaceOrder(ctx context.Context, token string, o model.Order) (model.Order, string, int, error) {
	if err := o.Validate(); err != nil {
		return o, token, 0, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if _, ok := s.catalog[o.Product]; !ok {
		return o, token, 0, fmt.Errorf("%w: unknown product %q", ErrInvalid, o.Product)
	}
	o.Amount = float64(model.ToCents(o.Amount)) / 100
	o.ID, o.Placed = newID(), time.Now().UTC().Format(time.RFC3339Nano)
	sess := s.session(token)
	// Reserve next to the stock key: the handler runs on its shard's leader.
	req, _ := json.Marshal(model.Reserve{Qty: o.Qty})
	inv, err := sess.Invoke(ctx, FnReserve, req, client.WithKey(model.StockKey(o.Product)))
	if err != nil {
		return o, sess.Token(), 0, fmt.Errorf("shop: reserve: %w", err)
	}
	var r model.Reserved
	if err := json.Unmarshal(inv.Body, &r); err != nil {
		return o, sess.Token(), 0, fmt.Errorf("shop: reserve answered %q", inv.Body)
	}
	if !r.OK {
		return o, sess.Token(), r.Left, ErrOutOfStock
	}
	b, err := json.Marshal(o)
	if err != nil {
		return o, sess.Token(), 0, err
	}
	if err := s.store(ctx, sess, model.OrderKey(o.Customer, o.ID), b); err != nil {
		var e *client.Error
		if errors.As(err, &e) && e.Status < 500 {
			// Refused, so surely not stored: give the units back.
			back, _ := json.Marshal(model.Reserve{Qty: -o.Qty})
			if _, berr := sess.Invoke(ctx, FnReserve, back, client.WithKey(model.StockKey(o.Product))); berr != nil {
				s.log.Warn("could not give units back", "product", o.Product, "qty", o.Qty, "err", berr)
			}
		}
		// Otherwise the outcome is unknown: the units stay reserved
		// (never oversell).
		return o, sess.Token(), 0, fmt.Errorf("shop: store order: %w", err)
	}
	return o, sess.Token(), r.Left, nil
}

// store creates the order's record. The key is new (If-None-Match), so a
// write whose outcome is unknown — a node lost mid-request — is simply
// sent again: a precondition failure then means the earlier one landed.
func (s *Shop) store(ctx context.Context, sess *client.Client, key string, b []byte) error {
	var err error
	for attempt := 0; attempt < 6; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return err
			case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
			}
		}
		_, err = sess.Put(ctx, key, b, client.IfNoneMatch())
		if err == nil {
			return nil
		}
		if attempt > 0 && errors.Is(err, client.ErrPrecondition) {
			item, found, gerr := sess.Get(ctx, key, client.WithConsistency(client.Linearizable))
			if gerr == nil && found && string(item.Value) == string(b) {
				return nil
			}
			return err
		}
		var e *client.Error
		if errors.As(err, &e) && e.Status < 500 {
			return err
		}
	}
	return err
}

// CustomerView is what GET /api/customers/{c} answers.
type CustomerView struct {
	Customer string `json:"customer"`
	// Orders and Total count every order of the customer: what the
	// totals trigger counted, plus the orders this session sees that it
	// has not counted yet (Pending), so a customer's own order shows at
	// once.
	Orders  int           `json:"orders"`
	Total   float64       `json:"total"`
	Pending int           `json:"pending"`
	Recent  []model.Order `json:"recent"` // newest first, at most 20
}

// Customer reads customer c's totals and orders in the session of token.
func (s *Shop) Customer(ctx context.Context, token, c string) (CustomerView, string, error) {
	v := CustomerView{Customer: c, Recent: []model.Order{}}
	if !model.ValidName(c) {
		return v, token, fmt.Errorf("%w: customer name", ErrInvalid)
	}
	sess := s.session(token)
	var cu model.Customer
	item, found, err := sess.Get(ctx, model.CustomerKey(c))
	if err != nil {
		return v, sess.Token(), err
	}
	if found {
		if err := json.Unmarshal(item.Value, &cu); err != nil {
			return v, sess.Token(), fmt.Errorf("shop: %s: %w", model.CustomerKey(c), err)
		}
	}
	// The orders are on the record's shard (same tag): a session read
	// after the record's sees every order the record counted, and every
	// order this session placed.
	cents := cu.TotalCents
	v.Orders = cu.Orders
	for it, err := range sess.ScanAll(ctx, model.CustomerOrdersPrefix(c), client.ScanOptions{}) {
		if err != nil {
			return v, sess.Token(), err
		}
		var o model.Order
		if json.Unmarshal(it.Value, &o) != nil {
			continue
		}
		if it.Version > cu.Last {
			v.Pending++
			v.Orders++
			cents += o.Cents()
		}
		v.Recent = append(v.Recent, o)
	}
	slices.Reverse(v.Recent) // ids sort by time
	if len(v.Recent) > 20 {
		v.Recent = v.Recent[:20]
	}
	v.Total = float64(cents) / 100
	return v, sess.Token(), nil
}

// Group is a named value of an analytics answer.
type Group struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
}

// TopCustomer is one of the top customers.
type TopCustomer struct {
	Customer string  `json:"customer"`
	Total    float64 `json:"total"`
}

// Analytics is what GET /api/analytics answers.
type Analytics struct {
	RevenueByRegion map[string]float64 `json:"revenue_by_region"`
	TopCustomers    []TopCustomer      `json:"top_customers"`
	UnitsSold       map[string]float64 `json:"units_sold"`
	OrderSizes      map[string]int     `json:"order_sizes"` // the shop-sizes histogram
	Orders          int                `json:"orders"`
	// Regions and Products are the keys of RevenueByRegion and UnitsSold
	// in the order the queries answered (by name).
	Regions  []string `json:"-"`
	Products []string `json:"-"`
}

// Analytics runs the analytics queries (in the session of token).
func (s *Shop) Analytics(ctx context.Context, token string) (Analytics, error) {
	sess := s.session(token)
	a := Analytics{RevenueByRegion: map[string]float64{}, UnitsSold: map[string]float64{}, TopCustomers: []TopCustomer{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, 5)
	run := func(i int, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := f()
			mu.Lock()
			errs[i] = err
			mu.Unlock()
		}()
	}
	groups := func(prefix, op, field, by string, into map[string]float64, names *[]string) func() error {
		return func() error {
			res, err := sess.Query(ctx, client.QueryRequest{Prefix: prefix, Aggregate: &client.Aggregate{Op: op, Field: field, GroupBy: by}})
			if err != nil {
				return err
			}
			gs, err := res.Groups()
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			for _, g := range gs {
				var v float64
				if json.Unmarshal(g.Value, &v) != nil {
					continue
				}
				if by == "region" {
					v = math.Round(v*100) / 100 // money: whole cents, not float sums' noise
				}
				into[g.Name()] = v
				*names = append(*names, g.Name())
			}
			return nil
		}
	}
	run(0, groups(model.OrdersPrefix, client.OpSum, "amount", "region", a.RevenueByRegion, &a.Regions))
	run(1, groups(model.SoldPrefix, client.OpSum, "qty", "product", a.UnitsSold, &a.Products))
	run(2, func() error {
		res, err := sess.Query(ctx, client.QueryRequest{Prefix: model.CustomersPrefix, Aggregate: &client.Aggregate{Op: client.OpTopK, Field: "total", K: 5}})
		if err != nil {
			return err
		}
		var top []client.TopItem
		if err := json.Unmarshal(res.Result, &top); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		for _, it := range top {
			a.TopCustomers = append(a.TopCustomers, TopCustomer{Customer: model.TagOf(it.Key), Total: it.Value})
		}
		return nil
	})
	run(3, func() error {
		res, err := sess.Query(ctx, client.QueryRequest{Prefix: model.OrdersPrefix, Function: FnSizes})
		if err != nil {
			return err
		}
		var h map[string]int
		if err := json.Unmarshal(res.Result, &h); err != nil {
			return fmt.Errorf("shop: %s answered %s", FnSizes, res.Result)
		}
		mu.Lock()
		a.OrderSizes = h
		mu.Unlock()
		return nil
	})
	run(4, func() error {
		res, err := sess.Query(ctx, client.QueryRequest{Prefix: model.OrdersPrefix, Aggregate: &client.Aggregate{Op: client.OpCount}})
		if err != nil {
			return err
		}
		var n int
		if err := json.Unmarshal(res.Result, &n); err != nil {
			return err
		}
		mu.Lock()
		a.Orders = n
		mu.Unlock()
		return nil
	})
	wg.Wait()
	sort.Strings(a.Regions)
	sort.Strings(a.Products)
	return a, errors.Join(errs...)
}

// ProductView is a product with its stock and units sold.
type ProductView struct {
	Product
	Left int `json:"left"`
}

// Products reads the stock of every product of the catalog.
func (s *Shop) Products(ctx context.Context, token string) ([]ProductView, error) {
	sess := s.session(token)
	var out []ProductView
	for _, p := range s.cfg.Catalog {
		pv := ProductView{Product: p}
		item, found, err := sess.Get(ctx, model.StockKey(p.Name))
		if err != nil {
			return nil, err
		}
		if found {
			pv.Left, _ = strconv.Atoi(string(item.Value))
		}
		out = append(out, pv)
	}
	return out, nil
}
