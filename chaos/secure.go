package chaos

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"lambdadb/client"
)

// Secure mode: the harness's cluster runs with a cluster secret, so every
// node speaks TLS 1.3 on its address and every request but /healthz and
// the bootstrap needs a token. The harness writes the secret, trusts the
// CA the first node writes to <data>/ca.pem (every node derives the same
// one from the secret), bootstraps the cluster's admin token once, and
// sends it on every request: Go clients through Client, raw requests
// through newRequest, transports configured by Transport.

// writeSecret writes a random cluster secret (48 bytes, hex) to
// dir/cluster.secret, mode 0600, and returns the file's path.
func writeSecret(dir string) (string, error) {
	b := make([]byte, 48)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	path, err := filepath.Abs(filepath.Join(dir, "cluster.secret"))
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(hex.EncodeToString(b)+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("chaos: cluster secret: %w", err)
	}
	return path, nil
}

// Secure reports whether the cluster runs in secure mode.
func (c *Cluster) Secure() bool { return c.secret != "" }

// Transport configures tr for the cluster's nodes (their CA in secure
// mode) and returns it.
func (c *Cluster) Transport(tr *http.Transport) *http.Transport {
	if c.tlsConf != nil {
		tr.TLSClientConfig = c.tlsConf.Clone()
	}
	return tr
}

// HTTPClient returns an HTTP client for the cluster's nodes with the
// given timeout (0: none). Its transport is shared: Go's default in
// insecure mode, one trusting the cluster's CA in secure mode.
func (c *Cluster) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: c.shared}
}

// Client returns a lambdadb client of node p over hc (which should come
// from HTTPClient or use a Transport from Transport), carrying the admin
// token in secure mode.
func (c *Cluster) Client(p *Proc, hc *http.Client, opts ...client.Option) (*client.Client, error) {
	all := []client.Option{client.WithHTTPClient(hc)}
	if c.token != "" {
		all = append(all, client.WithAuth(c.token))
	}
	return client.New(p.URL(), append(all, opts...)...)
}

// newRequest builds a request to path on node p, with the admin token in
// secure mode.
func (c *Cluster) newRequest(ctx context.Context, method string, p *Proc, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, p.URL()+path, body)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// secure readies the harness for a cluster in secure mode just started:
// it waits for the first node's CA certificate, then for every node to
// answer /healthz over TLS, then bootstraps the admin token.
func (c *Cluster) secure(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	first := c.procs[0]
	caFile := filepath.Join(c.dir, first.ID, "ca.pem")
	for {
		pem, err := os.ReadFile(caFile)
		if err == nil {
			pool := x509.NewCertPool()
			if pool.AppendCertsFromPEM(pem) {
				c.tlsConf = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
				break
			}
			err = errors.New("no PEM certificate in it yet")
		}
		if first.exited() {
			return fmt.Errorf("chaos: %s exited before writing %s; log: %s", first.ID, caFile, logTail(c.dir, first.ID))
		}
		if werr := wait(ctx, deadline, 100*time.Millisecond); werr != nil {
			return fmt.Errorf("chaos: %s: %v (%w)", caFile, err, werr)
		}
	}
	c.shared = c.Transport(http.DefaultTransport.(*http.Transport).Clone())
	c.hc.Transport = c.shared

	for _, p := range c.procs {
		for {
			err := c.healthz(ctx, p)
			if err == nil {
				break
			}
			if p.exited() {
				return fmt.Errorf("chaos: %s exited: %v; log: %s", p.ID, err, logTail(c.dir, p.ID))
			}
			if werr := wait(ctx, deadline, 200*time.Millisecond); werr != nil {
				return fmt.Errorf("chaos: %s does not answer /healthz over TLS: %v (%w)", p.ID, err, werr)
			}
		}
	}
	tok, err := c.bootstrap(ctx, deadline)
	if err != nil {
		return err
	}
	c.token = tok
	return nil
}

// wait sleeps for step, or fails when ctx ends or deadline has passed.
func wait(ctx context.Context, deadline time.Time, step time.Duration) error {
	if time.Now().After(deadline) {
		return errors.New("timed out")
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(step):
		return nil
	}
}

// healthz asks node p for GET /healthz.
func (c *Cluster) healthz(ctx context.Context, p *Proc) error {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := c.newRequest(rctx, http.MethodGet, p, "/healthz", nil)
	if err != nil {
		return err
	}
	res, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", res.StatusCode)
	}
	return nil
}

// bootstrap asks the cluster for its admin token (POST /v1/auth/bootstrap,
// which succeeds once per cluster) through the nodes in turn until one
// issues it.
//
// A failed attempt is retried. Most failures mean the bootstrap was not
// applied (no connection, no leader yet: 503). One that might have been
// applied (a timeout, a connection lost after the request was sent, a
// 504) is retried too; should it have been applied, the retry gets 409
// already_bootstrapped and the token is lost for good: the run fails,
// naming the attempt. Each attempt may take 30 s, longer than the node's
// own commit timeout, so that the node, not the harness, ends a slow
// attempt and answers it.
func (c *Cluster) bootstrap(ctx context.Context, deadline time.Time) (string, error) {
	hc := c.HTTPClient(30 * time.Second)
	var last, ambiguous error
	for attempt := 0; ; attempt++ {
		p := c.procs[attempt%len(c.procs)]
		status, body, err := c.post(ctx, hc, p, "/v1/auth/bootstrap")
		switch {
		case err != nil:
			last = fmt.Errorf("via %s: %w", p.ID, err)
			if !notSent(err) {
				ambiguous = last
			}
		case status == http.StatusOK:
			var out struct {
				Token string `json:"token"`
			}
			if err := json.Unmarshal(body, &out); err != nil || out.Token == "" {
				return "", fmt.Errorf("chaos: bootstrap via %s: no token in the answer (%v): %s", p.ID, err, apiMessage(body))
			}
			return out.Token, nil
		case status == http.StatusConflict:
			why := "no earlier attempt of this run could have been applied: the data directories are not new"
			if ambiguous != nil {
				why = fmt.Sprintf("an earlier attempt (%v) was applied but its answer was lost", ambiguous)
			}
			return "", fmt.Errorf("chaos: bootstrap via %s: %s: %s; the admin token is lost, the run cannot go on", p.ID, apiMessage(body), why)
		case status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests:
			last = fmt.Errorf("via %s: status %d: %s", p.ID, status, apiMessage(body))
		case status == http.StatusGatewayTimeout || status >= 500:
			last = fmt.Errorf("via %s: status %d: %s", p.ID, status, apiMessage(body))
			ambiguous = last
		default:
			return "", fmt.Errorf("chaos: bootstrap via %s: status %d: %s", p.ID, status, apiMessage(body))
		}
		if werr := wait(ctx, deadline, 500*time.Millisecond); werr != nil {
			return "", fmt.Errorf("chaos: bootstrap: %v (%w)", last, werr)
		}
	}
}

// post POSTs an empty body to path on node p over hc.
func (c *Cluster) post(ctx context.Context, hc *http.Client, p *Proc, path string) (int, []byte, error) {
	req, err := c.newRequest(ctx, http.MethodPost, p, path, nil)
	if err != nil {
		return 0, nil, err
	}
	res, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, b, err
}

// notSent reports whether a failed request certainly never reached the
// server's handler: the connection was refused or the TLS handshake
// failed.
func notSent(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	var rec tls.RecordHeaderError
	var cv *tls.CertificateVerificationError
	return errors.As(err, &rec) || errors.As(err, &cv) || strings.Contains(err.Error(), "tls: ")
}
