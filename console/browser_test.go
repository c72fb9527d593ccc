package console_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"lambdadb/internal/clustertest"
	"lambdadb/server"
	"lambdadb/shard"
)

const hostileKey = "ui/<script>alert(1)</script>"

// TestBrowser drives headless Chromium against a live three-node cluster:
// the cluster page shows the nodes and shards and keeps polling; the key
// browser lists a prefix's keys, renders a hostile key name as text, and
// pages on. It writes a screenshot of each page to bin/ui-shots/.
func TestBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster and a browser")
	}
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, Shards: 4,
		Handler: func(n *shard.Node) (http.Handler, error) { return server.New(server.Config{Node: n}) }})
	n := c.Members[0]
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	put := func(key string, value []byte) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, "PUT", "http://"+n.Addr+"/v1/kv/"+url.PathEscape(key), bytes.NewReader(value))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("put %q: %s", key, resp.Status)
		}
	}
	for i := range 7 {
		put(fmt.Sprintf("ui/k%02d", i), fmt.Appendf(nil, `{"n":%d,"name":"item %d"}`, i, i))
	}
	put(hostileKey, []byte("<img src=x onerror=alert(2)>"))
	put("ui/zz-binary", []byte{0, 1, 2, 0xff, 0xfe})

	b := startBrowser(t, 1280, 900)
	run, eval, shot := b.run, b.eval, b.shot
	base := "http://" + n.Addr

	// Cluster page: three nodes up, four shards with leaders; htmx is
	// loaded (the CSP let the node's own script run) and the live part
	// is swapped in again by polling.
	run("cluster page", chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible("#nodes tbody tr"))
	if got := eval(`String(document.querySelectorAll("#nodes tbody tr").length)`); got != "3" {
		t.Fatalf("nodes rows: %s", got)
	}
	nodes := eval(`document.querySelector("#nodes").innerText`)
	for _, id := range []string{"n1", "n2", "n3"} {
		if !strings.Contains(nodes, id) {
			t.Fatalf("node %s missing from %q", id, nodes)
		}
	}
	if got := eval(`String(document.querySelectorAll("#shards tbody tr").length)`); got != "4" {
		t.Fatalf("shard rows: %s", got)
	}
	if got := eval(`typeof htmx + " " + typeof uPlot`); got != "object function" {
		t.Fatalf("htmx and uPlot: %s", got)
	}
	eval(`document.querySelector("#nodes").dataset.old = "1"; ""`)
	run("poll", chromedp.WaitVisible(`#nodes:not([data-old])`))
	shot("cluster.png")

	// Key browser: a page of 4, the hostile key as text, then Next.
	run("keys page", chromedp.Navigate(base+"/ui/keys?prefix=ui/&limit=4"), chromedp.WaitVisible("#keys"))
	if got := eval(`String(document.querySelectorAll("#keys tbody tr").length)`); got != "4" {
		t.Fatalf("keys rows: %s", got)
	}
	// '<' sorts before 'k': the hostile key is on the first page.
	text := eval(`document.querySelector("#keys").innerText`)
	if !strings.Contains(text, hostileKey) || !strings.Contains(text, "<img src=x onerror=alert(2)>") {
		t.Fatalf("hostile key or value not shown as text: %q", text)
	}
	if got := eval(`String(document.querySelectorAll("#keys script, #keys img").length)`); got != "0" {
		t.Fatalf("the hostile key became markup: %s elements", got)
	}
	// Follow the Next link by navigating to it: Navigate waits for the new
	// page to load, where a click would let the old page's #keys match.
	for _, step := range []string{"next page", "last page"} {
		href := eval(`document.querySelector("#next") ? document.querySelector("#next").href : ""`)
		if href == "" {
			t.Fatalf("%s: no Next link", step)
		}
		run(step, chromedp.Navigate(href), chromedp.WaitVisible(`#keys`))
	}
	text = eval(`document.querySelector("#keys").innerText`)
	if !strings.Contains(text, "00 01 02 ff fe") {
		t.Fatalf("binary value not shown as hex: %q", text)
	}
	// An alert would block the page: evaluating still works only if none
	// fired.
	if got := eval(`document.title`); !strings.Contains(got, "Keys") {
		t.Fatalf("title %q", got)
	}
	run("first page", chromedp.Navigate(base+"/ui/keys?prefix=ui/"), chromedp.WaitVisible("#keys"))
	if got := eval(`document.querySelector("#keys").innerText`); !strings.Contains(got, `"name": "item 3"`) {
		t.Fatalf("JSON not pretty-printed: %q", got)
	}
	shot("keys.png")
}
