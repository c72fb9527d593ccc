package shop_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"lambdadb/client"
	"lambdadb/examples/shop"
	"lambdadb/examples/shop/model"
	"lambdadb/internal/apitest"
	"lambdadb/internal/clustertest"
	"lambdadb/internal/wasmtest"
)

// handlersDir holds the shop's handlers, built once for the package's
// tests as `make examples` builds them.
var handlersDir string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "shop-handlers-")
	if err != nil {
		panic(err)
	}
	handlersDir = d
	var wg sync.WaitGroup
	errs := make([]error, len(shop.Handlers))
	for i, name := range shop.Handlers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := wasmtest.BuildErr("examples/shop/handlers/" + strings.TrimPrefix(name, "shop-"))
			if err == nil {
				err = os.WriteFile(filepath.Join(d, name+".wasm"), b, 0o644)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	code := 0
	for _, err := range errs {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	if code == 0 {
		code = m.Run()
	}
	os.RemoveAll(d)
	os.Exit(code)
}

// cluster starts three in-process nodes serving the whole HTTP API:
// functions, triggers, feeds and queries.
func cluster(t *testing.T) *clustertest.Cluster {
	t.Helper()
	return apitest.Start(t, apitest.Options{Nodes: 3, Shards: 8})
}

// catalog is the default one and a scarce product for the contention test.
var catalog = append(append([]shop.Product{}, shop.DefaultCatalog...), shop.Product{Name: "scarce", Price: 9.99, Stock: 20})

// startShop serves a shop whose client's base is member base (the others
// are its fallbacks).
func startShop(t *testing.T, c *clustertest.Cluster, base int, handlers string) (*shop.Shop, *httptest.Server) {
	t.Helper()
	nodes := []string{}
	for i := range c.Members {
		nodes = append(nodes, "http://"+c.Members[(base+i)%len(c.Members)].Addr)
	}
	s, err := shop.New(shop.Config{Nodes: nodes, Handlers: handlers, Catalog: catalog})
	if err != nil {
		t.Fatal(err)
	}
	// Deploys wait for every node to compile the handlers: slow under the
	// race detector on a small machine. Setup is idempotent: try again.
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		err := s.Setup(ctx)
		cancel()
		if err == nil {
			break
		}
		if attempt == 2 {
			t.Fatal(err)
		}
		t.Logf("set-up: %v; again", err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		ts.CloseClientConnections()
		ts.Close()
		s.Close()
	})
	return s, ts
}

type resp struct {
	status int
	body   []byte
	tok    string
}

func call(t testing.TB, method, url string, body any, tok string) resp {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if tok != "" {
		req.Header.Set(shop.SessionHeader, tok)
	}
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		return resp{status: 0, body: []byte(err.Error())}
	}
	defer r.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(r.Body)
	return resp{r.StatusCode, buf.Bytes(), r.Header.Get(shop.SessionHeader)}
}

func order(customer, region, product string, qty int, amount float64) shop.OrderRequest {
	return shop.OrderRequest{Customer: customer, Region: region, Product: product, Qty: qty, Amount: amount}
}

// TestShop drives the shop end to end against three nodes: orders and
// reading one's own on another node, stock contention, the live feed,
// totals after a node is killed mid-stream, and analytics — each checked
// against a computation of its own over what is stored.
func TestShop(t *testing.T) {
	c := cluster(t)
	_, a := startShop(t, c, 0, handlersDir) // deploys the handlers, creates the triggers and the stock
	_, b := startShop(t, c, 2, "")          // another shop on another node

	t.Run("orders", func(t *testing.T) {
		r := call(t, "POST", a.URL+"/api/orders", order("ada", "eu", "mug", 2, 15.8), "")
		if r.status != http.StatusCreated || r.tok == "" {
			t.Fatalf("order: %d %s (token %q)", r.status, r.body, r.tok)
		}
		var or shop.OrderResponse
		if err := json.Unmarshal(r.body, &or); err != nil || or.ID == "" || or.Left != 798 {
			t.Fatalf("order: %s %v", r.body, err)
		}
		// Right away, through the other shop and node, with the session:
		// the order is there, and counted.
		g := call(t, "GET", b.URL+"/api/customers/ada", nil, r.tok)
		var v shop.CustomerView
		if err := json.Unmarshal(g.body, &v); g.status != 200 || err != nil {
			t.Fatalf("customer: %d %s", g.status, g.body)
		}
		if v.Orders != 1 || v.Total != 15.8 || len(v.Recent) != 1 || v.Recent[0].ID != or.ID {
			t.Fatalf("customer right after the order: %s", g.body)
		}
		// And once the trigger has counted it, from its record.
		c.Eventually(10*time.Second, "the totals trigger counts the order", func() bool {
			g := call(t, "GET", b.URL+"/api/customers/ada", nil, "")
			_ = json.Unmarshal(g.body, &v)
			return g.status == 200 && v.Orders == 1 && v.Pending == 0 && v.Total == 15.8
		})
		for _, tc := range []struct {
			body   any
			status int
		}{
			{order("ada", "eu", "mug", 801, 1), http.StatusConflict},
			{order("ada", "eu", "nothing", 1, 1), http.StatusBadRequest},
			{order("Ada!", "eu", "mug", 1, 1), http.StatusBadRequest},
			{order("ada", "eu", "mug", 0, 1), http.StatusBadRequest},
			{order("ada", "eu", "mug", 1, -1), http.StatusBadRequest},
			{map[string]any{"customer": "ada", "extra": 1}, http.StatusBadRequest},
		} {
			if r := call(t, "POST", a.URL+"/api/orders", tc.body, ""); r.status != tc.status {
				t.Errorf("%+v: %d %s, want %d", tc.body, r.status, r.body, tc.status)
			}
		}
		if r := call(t, "GET", a.URL+"/api/customers/nobody", nil, ""); r.status != 200 || !strings.Contains(string(r.body), `"orders":0`) {
			t.Fatalf("a customer without orders: %d %s", r.status, r.body)
		}
	})

	t.Run("contention", func(t *testing.T) {
		// 50 buyers at once for 20 units: exactly 20 get one.
		var ok, out atomic.Int32
		var wg sync.WaitGroup
		for i := 0; i < 50; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				via := []string{a.URL, b.URL}[i%2]
				r := call(t, "POST", via+"/api/orders", order(fmt.Sprintf("buyer-%d", i), "us", "scarce", 1, 9.99), "")
				switch r.status {
				case http.StatusCreated:
					ok.Add(1)
				case http.StatusConflict:
					out.Add(1)
				default:
					t.Errorf("buyer %d: %d %s", i, r.status, r.body)
				}
			}()
		}
		wg.Wait()
		if ok.Load() != 20 || out.Load() != 30 {
			t.Fatalf("%d orders, %d out of stock; want 20 and 30", ok.Load(), out.Load())
		}
		cl, _ := client.New("http://" + c.Members[1].Addr)
		item, _, err := cl.Get(context.Background(), model.StockKey("scarce"))
		if err != nil || string(item.Value) != "0" {
			t.Fatalf("stock left %q %v", item.Value, err)
		}
		n := 0
		for it, err := range cl.ScanAll(context.Background(), model.OrdersPrefix, client.ScanOptions{}) {
			if err != nil {
				t.Fatal(err)
			}
			var o model.Order
			if json.Unmarshal(it.Value, &o) == nil && o.Product == "scarce" {
				n++
			}
		}
		if n != 20 {
			t.Fatalf("%d orders of the scarce product stored, want 20", n)
		}
	})

	t.Run("live", func(t *testing.T) {
		ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(a.URL, "http")+"/live/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		r := call(t, "POST", b.URL+"/api/orders", order("grace", "apac", "lamp", 1, 24.5), "")
		var or shop.OrderResponse
		if err := json.Unmarshal(r.body, &or); r.status != http.StatusCreated || err != nil {
			t.Fatalf("order: %d %s", r.status, r.body)
		}
		_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			var lo shop.LiveOrder
			if err := ws.ReadJSON(&lo); err != nil {
				t.Fatalf("the live page never got order %s: %v", or.ID, err)
			}
			if lo.ID == or.ID {
				if lo.Customer != "grace" || lo.Version == 0 {
					t.Fatalf("live order %+v", lo)
				}
				break
			}
		}
	})

	var acked sync.Map // order id → model.Order, acknowledged with 201
	t.Run("node killed mid-stream", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var placed, failed atomic.Int64
		s, _ := shop.New(shop.Config{Nodes: []string{"http://" + c.Members[0].Addr}, Catalog: catalog}) // only for RandomOrder
		defer s.Close()
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(w), 7))
				for i := 0; ctx.Err() == nil; i++ {
					o := s.RandomOrder(rng)
					via := []string{a.URL, b.URL}[i%2]
					r := call(t, "POST", via+"/api/orders", order(o.Customer, o.Region, o.Product, o.Qty, o.Amount), "")
					var or shop.OrderResponse
					if r.status == http.StatusCreated && json.Unmarshal(r.body, &or) == nil {
						acked.Store(or.ID, or.Order)
						placed.Add(1)
					} else if r.status != http.StatusConflict {
						failed.Add(1)
					}
				}
			}()
		}
		time.Sleep(1500 * time.Millisecond)
		before := placed.Load()
		c.Kill("n3") // the node shop b's client has for its base
		t.Logf("n3 killed after %d orders", before)
		time.Sleep(3 * time.Second)
		cancel()
		wg.Wait()
		t.Logf("%d orders placed, %d failed", placed.Load(), failed.Load())
		if placed.Load() < before+20 {
			t.Fatalf("only %d orders placed after the kill", placed.Load()-before)
		}

		// What is stored, through a live node.
		cl, _ := client.New("http://" + c.Members[0].Addr)
		stored := storedOrders(t, cl)
		acked.Range(func(k, v any) bool {
			if _, ok := stored[k.(string)]; !ok {
				t.Errorf("acknowledged order %s is not stored", k)
			}
			return true
		})
		// The totals trigger's records equal a client-side sum, exactly,
		// once it has caught up; so do the sold markers.
		want := map[string]model.Customer{}
		units := map[string]int{}
		for _, o := range stored {
			w := want[o.Customer]
			w.Orders++
			w.TotalCents += o.Cents()
			want[o.Customer] = w
			units[o.Product] += o.Qty
		}
		var last string
		c.Eventually(30*time.Second, "the customer records equal the sum of the orders", func() bool {
			got := map[string]model.Customer{}
			for it, err := range cl.ScanAll(context.Background(), model.CustomersPrefix, client.ScanOptions{}) {
				if err != nil {
					last = err.Error()
					return false
				}
				var cu model.Customer
				if err := json.Unmarshal(it.Value, &cu); err != nil {
					t.Fatal(err)
				}
				got[cu.Customer] = model.Customer{Orders: cu.Orders, TotalCents: cu.TotalCents}
			}
			if len(got) != len(want) {
				last = fmt.Sprintf("%d customers, want %d", len(got), len(want))
				return false
			}
			for k, w := range want {
				if got[k] != w {
					last = fmt.Sprintf("%s: %+v, want %+v", k, got[k], w)
					return false
				}
			}
			return true
		})
		if t.Failed() {
			t.Log(last)
		}
		c.Eventually(30*time.Second, "the sold markers equal the units ordered", func() bool {
			got := map[string]int{}
			for it, err := range cl.ScanAll(context.Background(), model.SoldPrefix, client.ScanOptions{}) {
				if err != nil {
					return false
				}
				var s model.Sold
				if json.Unmarshal(it.Value, &s) == nil {
					got[s.Product] += s.Qty
				}
			}
			return fmt.Sprint(got) == fmt.Sprint(units)
		})
		// Never oversold: what is left and what was ordered add up to at
		// most the initial stock (a reservation whose order could not be
		// stored keeps its units).
		for _, p := range catalog {
			item, _, err := cl.Get(context.Background(), model.StockKey(p.Name))
			if err != nil {
				t.Fatal(err)
			}
			var left int
			fmt.Sscan(string(item.Value), &left)
			if left < 0 || left+units[p.Name] > p.Stock {
				t.Errorf("%s: %d left and %d ordered, of %d", p.Name, left, units[p.Name], p.Stock)
			}
		}
	})

	t.Run("analytics", func(t *testing.T) {
		cl, _ := client.New("http://" + c.Members[1].Addr)
		stored := storedOrders(t, cl)
		revenue := map[string]int64{}
		spent := map[string]int64{}
		units := map[string]int{}
		sizes := map[string]int{"1": 0, "2": 0, "3-5": 0, "6-10": 0, "11+": 0}
		for _, o := range stored {
			revenue[o.Region] += o.Cents()
			spent[o.Customer] += o.Cents()
			units[o.Product] += o.Qty
			switch {
			case o.Qty == 1:
				sizes["1"]++
			case o.Qty == 2:
				sizes["2"]++
			case o.Qty <= 5:
				sizes["3-5"]++
			case o.Qty <= 10:
				sizes["6-10"]++
			default:
				sizes["11+"]++
			}
		}
		type cust struct {
			name  string
			cents int64
		}
		var top []cust
		for n, v := range spent {
			top = append(top, cust{n, v})
		}
		sort.Slice(top, func(i, j int) bool {
			if top[i].cents != top[j].cents {
				return top[i].cents > top[j].cents
			}
			return model.CustomerKey(top[i].name) < model.CustomerKey(top[j].name)
		})
		top = top[:5]
		for _, via := range []string{a.URL, b.URL} {
			r := call(t, "GET", via+"/api/analytics", nil, "")
			var an shop.Analytics
			if err := json.Unmarshal(r.body, &an); r.status != 200 || err != nil {
				t.Fatalf("analytics: %d %s", r.status, r.body)
			}
			if an.Orders != len(stored) || len(an.RevenueByRegion) != len(revenue) {
				t.Fatalf("analytics: %s\nwant %d orders, revenue %v", r.body, len(stored), revenue)
			}
			for region, cents := range revenue {
				if model.ToCents(an.RevenueByRegion[region]) != cents {
					t.Fatalf("revenue of %s: %v, want %d cents", region, an.RevenueByRegion[region], cents)
				}
			}
			if len(an.TopCustomers) != 5 {
				t.Fatalf("top customers %+v", an.TopCustomers)
			}
			for i, tc := range an.TopCustomers {
				if tc.Customer != top[i].name || model.ToCents(tc.Total) != top[i].cents {
					t.Fatalf("top customers %+v, want %+v", an.TopCustomers, top)
				}
			}
			if fmt.Sprint(an.OrderSizes) != fmt.Sprint(sizes) {
				t.Fatalf("order sizes %v, want %v", an.OrderSizes, sizes)
			}
			for p, n := range units {
				if an.UnitsSold[p] != float64(n) {
					t.Fatalf("units sold %v, want %v", an.UnitsSold, units)
				}
			}
		}
	})
}

// storedOrders scans every stored order.
func storedOrders(t *testing.T, cl *client.Client) map[string]model.Order {
	t.Helper()
	out := map[string]model.Order{}
	for it, err := range cl.ScanAll(context.Background(), model.OrdersPrefix, client.ScanOptions{Consistency: client.Linearizable}) {
		if err != nil {
			t.Fatal(err)
		}
		var o model.Order
		if err := json.Unmarshal(it.Value, &o); err != nil {
			t.Fatalf("%s: %v", it.Key, err)
		}
		out[o.ID] = o
	}
	return out
}
