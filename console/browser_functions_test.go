package console_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"lambdadb/internal/apitest"
	"lambdadb/internal/wasmtest"
	"lambdadb/lambda"
)

// TestBrowserFunctions drives headless Chromium against a live three-node
// cluster with functions: it deploys a handler that logs, invokes it, and
// checks that the functions list and the function's page show the
// invocation count the API shows, that a line the handler logs while the
// page is open arrives in the live tail, that the deploy history shows
// the deploy and that the charts are drawn. It writes screenshots to
// bin/ui-shots/functions.png and function.png.
func TestBrowserFunctions(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster and a browser")
	}
	module := wasmtest.Guest(t, "faulty") // its "stdout" request logs "via Log 42"
	c := apitest.Start(t, apitest.Options{Nodes: 3, Shards: 4, NoTriggers: true,
		Lambda: func(_ string, cfg *lambda.Config) { cfg.SampleInterval = time.Second }})
	base := "http://" + c.Members[0].Addr
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	call := func(method, path string, body []byte) []byte {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, base+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode/100 != 2 {
			t.Fatalf("%s %s: %s %s", method, path, resp.Status, b)
		}
		return b
	}
	var deployed lambda.Function
	if err := json.Unmarshal(call("PUT", "/v1/functions/logger?memory_mb=128", module), &deployed); err != nil {
		t.Fatal(err)
	}
	invoke := func() { call("POST", "/v1/functions/logger/invoke", []byte("stdout")) }
	for range 5 {
		invoke()
	}
	apiInvocations := func() string {
		var st lambda.Stats
		if err := json.Unmarshal(call("GET", "/v1/functions/logger", nil), &st); err != nil {
			t.Fatal(err)
		}
		return strconv.FormatUint(st.Invocations, 10)
	}
	if got := apiInvocations(); got != "5" {
		t.Fatalf("API invocations %s, want 5", got)
	}

	b := startBrowser(t, 1366, 900)
	run, eval, shot, waitJS := b.run, b.eval, b.shot, b.waitJS

	// The list: the function, its invocations as the API counts them.
	run("functions page", chromedp.Navigate(base+"/ui/functions"), chromedp.WaitVisible("#functions tbody tr"))
	if got := eval(`document.querySelector("#functions tbody tr a").textContent`); got != "logger" {
		t.Fatalf("function link %q", got)
	}
	if got, want := eval(`document.querySelector('#functions [data-field="invocations"]').textContent`), apiInvocations(); got != want {
		t.Fatalf("list shows %s invocations, the API %s", got, want)
	}
	if got := eval(`document.querySelector('nav a[accesskey="f"]').getAttribute("aria-current")`); got != "page" {
		t.Fatalf("nav link: aria-current %q", got)
	}
	shot("functions.png")

	// The function's page.
	run("function page", chromedp.Navigate(base+"/ui/functions/logger"), chromedp.WaitVisible("#total-invocations"))
	if got, want := eval(`document.querySelector("#total-invocations").textContent`), apiInvocations(); got != want {
		t.Fatalf("page shows %s invocations, the API %s", got, want)
	}
	if got := eval(`String(document.querySelectorAll("#per-node tbody tr").length)`); got != "3" {
		t.Fatalf("per-node rows: %s", got)
	}
	hist := eval(`document.querySelector("#deploys tbody").innerText`)
	if !strings.Contains(hist, deployed.SHA256[:16]) || !strings.Contains(hist, "128 MB") || !strings.Contains(hist, c.Members[0].ID) {
		t.Fatalf("deploy history %q lacks the deploy (sha256 %s, 128 MB, through %s)", hist, deployed.SHA256[:16], c.Members[0].ID)
	}
	// The tail holds the lines logged so far; a new call's line arrives
	// without reloading.
	logged := `Array.from(document.querySelectorAll("#log-tail li")).filter(li => li.textContent.includes("via Log 42")).length`
	waitJS("log tail", logged+" === 5")
	invoke()
	waitJS("live log line", logged+" === 6")
	// The totals are polled again: the sixth call shows, as in the API.
	waitJS("totals refresh", `document.querySelector("#total-invocations").textContent === "6"`)
	if got := apiInvocations(); got != "6" {
		t.Fatalf("API invocations %s, want 6", got)
	}
	// Charts: five uPlot charts with samples of the series.
	waitJS("charts", `document.querySelectorAll("#charts .uplot").length === 5 && Number(document.querySelector("#charts").dataset.samples) >= 3`)
	shot("function.png")

	// An unknown function is a 404 page.
	run("unknown function", chromedp.Navigate(base+"/ui/functions/nothing"), chromedp.WaitVisible("#error"))
	if got := eval(`document.querySelector("#error").textContent`); !strings.Contains(got, `no function "nothing"`) {
		t.Fatalf("unknown function page: %q", got)
	}
}
