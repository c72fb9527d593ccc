package console_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"lambdadb/internal/apitest"
	"lambdadb/internal/clustertest"
	"lambdadb/internal/wasmtest"
)

// hostileTrigKey is a key under the trigger's prefix whose dead letter's
// key and error both carry markup.
const hostileTrigKey = "ui/<img src=x onerror=alert(3)>"

// fnCluster is a three-node cluster whose nodes run functions and
// triggers, as serve sets them up.
func fnCluster(t *testing.T) *clustertest.Cluster {
	t.Helper()
	return apitest.Start(t, apitest.Options{Nodes: 3, Shards: 4, TriggerPoll: 100 * time.Millisecond})
}

// TestBrowserTriggersAndQuery drives headless Chromium against a live
// three-node cluster with functions and triggers: a trigger's handler
// fails on two changes (one with a hostile key), whose dead letters the
// triggers page lists with their errors, as text; once the handler is
// cured, the Replay button — pressed from the keyboard — delivers the
// change (the API shows the letter gone and the handler's write). The
// query page's count equals the API's. Screenshots go to bin/ui-shots/.
func TestBrowserTriggersAndQuery(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster and a browser")
	}
	c := fnCluster(t)
	base := "http://" + c.Members[0].Addr
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	call := func(method, path string, body []byte) (int, []byte) {
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
		return resp.StatusCode, b
	}
	must := func(want int, method, path string, body []byte) []byte {
		t.Helper()
		st, b := call(method, path, body)
		if st != want {
			t.Fatalf("%s %s: %d %s", method, path, st, b)
		}
		return b
	}
	must(201, "PUT", "/v1/functions/rec", wasmtest.Guest(t, "faulty"))
	must(201, "PUT", "/v1/triggers/tr1", []byte(`{"function":"rec","prefix":"ui/","max_retries":0,"max_wait_ms":0}`))
	for i := range 5 {
		must(200, "PUT", fmt.Sprintf("/v1/kv/ui/k%d", i), fmt.Appendf(nil, `{"n":%d}`, i))
	}
	must(200, "PUT", "/v1/kv/ui/a", []byte("poison"))
	must(200, "PUT", "/v1/kv/"+url.PathEscape(hostileTrigKey), []byte("poison"))

	type letter struct{ ID, Key, Error string }
	deadOf := func() []letter {
		var out struct{ Dead []letter }
		if err := json.Unmarshal(must(200, "GET", "/v1/triggers/tr1/dead", nil), &out); err != nil {
			t.Fatal(err)
		}
		return out.Dead
	}
	var dead []letter
	for deadline := time.Now().Add(30 * time.Second); len(dead) < 2; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("dead letters: %+v", dead)
		}
		dead = deadOf()
	}
	var a letter
	for _, l := range dead {
		if l.Key == "ui/a" {
			a = l
		}
	}
	if a.ID == "" {
		t.Fatalf("no dead letter of ui/a: %+v", dead)
	}

	b := startBrowser(t, 1280, 1000)
	run, eval, shot := b.run, b.eval, b.shot

	// The triggers page: the trigger, its shards, both dead letters with
	// their errors; the hostile key and error as text.
	run("triggers page", chromedp.Navigate(base+"/ui/triggers"), chromedp.WaitVisible(`#trigger-tr1 table.letters tbody tr`))
	if got := eval(`String(document.querySelectorAll("#trigger-tr1 table.letters tbody tr").length)`); got != "2" {
		t.Fatalf("dead letter rows: %s", got)
	}
	if got := eval(`String(document.querySelectorAll("#trigger-tr1 table.shards tbody tr").length)`); got != "4" {
		t.Fatalf("shard rows: %s", got)
	}
	text := eval(`document.querySelector("#trigger-tr1").innerText`)
	for _, want := range []string{"rec", "running", "poison change at ui/a", hostileTrigKey, "poison change at " + hostileTrigKey} {
		if !strings.Contains(text, want) {
			t.Fatalf("%q missing from the page: %q", want, text)
		}
	}
	if got := eval(`String(document.querySelectorAll("#triggers-live img, #triggers-live script").length)`); got != "0" {
		t.Fatalf("the hostile key became markup: %s elements", got)
	}
	// The page's totals are the API's.
	var api struct {
		Delivered   uint64
		DeadLetters uint64 `json:"dead_letters"`
	}
	if err := json.Unmarshal(must(200, "GET", "/v1/triggers/tr1", nil), &api); err != nil {
		t.Fatal(err)
	}
	if got := eval(`document.querySelector("#trigger-tr1 td.dead").innerText`); got != fmt.Sprint(api.DeadLetters) {
		t.Fatalf("dead letters total %s, API %d", got, api.DeadLetters)
	}
	// The live part is polled.
	eval(`document.querySelector("#triggers-live").dataset.old = "1"; ""`)
	run("poll", chromedp.WaitVisible(`#triggers-live:not([data-old])`))
	shot("triggers.png")

	// Cure the handler, then press Replay from the keyboard.
	must(200, "PUT", "/v1/kv/cure/ui/a", []byte("1"))
	sel := `#trigger-tr1 tr[data-id="` + a.ID + `"] button.replay`
	run("replay", chromedp.Focus(sel), chromedp.KeyEvent("\r"), chromedp.WaitVisible(`#notice`))
	if got := eval(`document.querySelector("#notice").innerText`); !strings.Contains(got, "Dead letter "+a.ID+" of trigger tr1 replayed") {
		t.Fatalf("notice %q", got)
	}
	for _, l := range deadOf() {
		if l.ID == a.ID {
			t.Fatalf("replayed letter still listed: %+v", l)
		}
	}
	if got := string(must(200, "GET", "/v1/kv/log/ui/a", nil)); !strings.HasSuffix(got, ":poison;") {
		t.Fatalf("the handler did not see the change: %q", got)
	}
	if got := eval(`String(document.querySelectorAll("#trigger-tr1 table.letters tbody tr").length)`); got != "1" {
		t.Fatalf("dead letter rows after the replay: %s", got)
	}

	// The query page: a count over ui/ equals the API's.
	var q struct{ Result json.RawMessage }
	if err := json.Unmarshal(must(200, "POST", "/v1/query", []byte(`{"prefix":"ui/","aggregate":{"op":"count"}}`)), &q); err != nil {
		t.Fatal(err)
	}
	run("query page", chromedp.Navigate(base+"/ui/query"), chromedp.WaitVisible(`#query-form`),
		chromedp.SetValue(`#op`, "count"), chromedp.SetValue(`#prefix`, "ui/"), chromedp.Click(`#run`),
		chromedp.WaitVisible(`#result-value`))
	if got := eval(`document.querySelector("#result-value").innerText`); got != string(q.Result) {
		t.Fatalf("page count %s, API %s", got, q.Result)
	}
	if got := eval(`String(document.querySelectorAll("#per-shard tbody tr").length)`); got != "4" {
		t.Fatalf("per-shard rows: %s", got)
	}
	if got := eval(`String(document.querySelectorAll("#levels tbody tr").length)`); got == "0" {
		t.Fatalf("no per-level rows")
	}
	shot("query.png")
	// A bad query shows the API's message.
	run("bad query", chromedp.Navigate(base+"/ui/query?op=topk&prefix=ui/"), chromedp.WaitVisible(`#error`))
	if got := eval(`document.querySelector("#error").innerText`); !strings.Contains(got, "topk needs a field") {
		t.Fatalf("error %q", got)
	}
}
