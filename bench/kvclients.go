package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// LambdaKV issues KV requests to a lambdadb cluster over HTTP, worker w
// talking to node w mod N and keeping its own session token.
type LambdaKV struct {
	addrs []string
	hc    *http.Client
	mu    sync.Mutex
	toks  map[int]string
}

// NewLambdaKV returns a client for the nodes at addrs.
func NewLambdaKV(addrs []string, clients int) *LambdaKV {
	tr := &http.Transport{MaxIdleConns: 4 * clients, MaxIdleConnsPerHost: 2 * clients, IdleConnTimeout: time.Minute}
	return &LambdaKV{addrs: addrs, hc: &http.Client{Transport: tr}, toks: map[int]string{}}
}

func (l *LambdaKV) do(ctx context.Context, w int, method, path, consistency string, body []byte) error {
	url := "http://" + l.addrs[w%len(l.addrs)] + path
	if consistency != "" {
		url += "?consistency=" + consistency
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	l.mu.Lock()
	tok := l.toks[w]
	l.mu.Unlock()
	if tok != "" {
		req.Header.Set("X-Session", tok)
	}
	res, err := l.hc.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if t := res.Header.Get("X-Session"); t != "" {
		l.mu.Lock()
		l.toks[w] = t
		l.mu.Unlock()
	}
	if res.StatusCode != 200 {
		return fmt.Errorf("%s %s: %s", method, path, res.Status)
	}
	return nil
}

// Put writes key.
func (l *LambdaKV) Put(ctx context.Context, w int, key string, val []byte) error {
	return l.do(ctx, w, "PUT", "/v1/kv/"+key, "", val)
}

// Get reads key at consistency.
func (l *LambdaKV) Get(ctx context.Context, w int, key, consistency string) error {
	return l.do(ctx, w, "GET", "/v1/kv/"+key, consistency, nil)
}

// EtcdKV issues KV requests to etcd through a pool of gRPC clients.
type EtcdKV struct {
	clients []*clientv3.Client
}

// NewEtcdKV connects conns clients to the endpoints at addrs.
func NewEtcdKV(addrs []string, conns int) (*EtcdKV, error) {
	var eps []string
	for _, a := range addrs {
		eps = append(eps, "http://"+a)
	}
	e := &EtcdKV{}
	for i := 0; i < conns; i++ {
		// Rotate endpoints so connections spread over the members.
		rot := append(append([]string{}, eps[i%len(eps):]...), eps[:i%len(eps)]...)
		c, err := clientv3.New(clientv3.Config{Endpoints: rot, DialTimeout: 5 * time.Second})
		if err != nil {
			e.Close()
			return nil, err
		}
		e.clients = append(e.clients, c)
	}
	return e, nil
}

// Close closes every client.
func (e *EtcdKV) Close() {
	for _, c := range e.clients {
		c.Close()
	}
}

// Put writes key.
func (e *EtcdKV) Put(ctx context.Context, w int, key string, val []byte) error {
	_, err := e.clients[w%len(e.clients)].Put(ctx, key, string(val))
	return err
}

// Get reads key, linearizably or, for "serializable", from the local member.
func (e *EtcdKV) Get(ctx context.Context, w int, key, consistency string) error {
	var opts []clientv3.OpOption
	if consistency == "serializable" {
		opts = append(opts, clientv3.WithSerializable())
	}
	_, err := e.clients[w%len(e.clients)].Get(ctx, key, opts...)
	return err
}
