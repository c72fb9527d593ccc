package console_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// browser is a headless Chromium driven through chromedp for one test.
type browser struct {
	t     *testing.T
	ctx   context.Context
	shots string // where shot writes screenshots: bin/ui-shots/
}

// startBrowser starts Debian's chromium with a window of width × height,
// or skips the test when it is not on PATH. It is stopped at the end of
// the test.
func startBrowser(t *testing.T, width, height int) *browser {
	t.Helper()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium not found on PATH: install it (make test does: apt-get install -y chromium)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.WindowSize(width, height))
	actx, acancel := chromedp.NewExecAllocator(t.Context(), opts...)
	t.Cleanup(acancel)
	bctx, bcancel := chromedp.NewContext(actx)
	t.Cleanup(bcancel)
	if err := chromedp.Do(bctx); err != nil { // starts the browser
		t.Fatal(err)
	}
	shots := filepath.Join("..", "bin", "ui-shots")
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	return &browser{t: t, ctx: bctx, shots: shots}
}

// run performs steps, failing the test (naming what) on an error or after
// 20 s.
func (b *browser) run(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	tctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(tctx, steps...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// eval returns the string expr evaluates to in the page.
func (b *browser) eval(expr string) string {
	b.t.Helper()
	tctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(tctx, chromedp.Evaluate[string](expr))
	if err != nil {
		b.t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// waitJS polls expr until it is true, failing the test after 20 s.
func (b *browser) waitJS(what, expr string) {
	b.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for b.eval("String(!!("+expr+"))") != "true" {
		if time.Now().After(deadline) {
			b.t.Fatalf("%s: %s never became true", what, expr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// shot writes a screenshot of the whole page to bin/ui-shots/name.
func (b *browser) shot(name string) {
	b.t.Helper()
	tctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(tctx, chromedp.FullScreenshot(100)) // quality 100: a PNG (below it, a JPEG)
	if err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.shots, name), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}
