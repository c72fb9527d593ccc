package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"lambdadb/client"
	"net/http"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// LambdaKV issues KV requests to a lambdadb cluster through the Go client,
// worker w created for node w mod N with its own session: the client sends
// each key's requests to the key's shard leader once it has learnt the
// placement, as an application using the client does.
type LambdaKV struct {
	clients []*client.Client
}

// NewLambdaKV returns clients for the nodes at addrs (plain HTTP), one
// per worker.
func NewLambdaKV(addrs []string, clients int) *LambdaKV {
	var urls []string
	for _, a := range addrs {
		urls = append(urls, "http://"+a)
	}
	return newLambdaKV(urls, clients, nil, "")
}

// NewClusterKV returns clients for the nodes of c, one per worker: in
// secure mode over HTTPS, trusting c's CA, each sending c's admin token
// (client.WithAuth).
func NewClusterKV(c *Cluster, clients int) *LambdaKV {
	return newLambdaKV(c.URLs(), clients, c.TLSConfig(), c.Token)
}

// newLambdaKV creates the clients. They share one transport (one pool of
// kept-alive connections), in secure mode too: its TLS configuration
// trusts the cluster's CA, as client.WithCACert would (which would give
// each client a transport of its own).
func newLambdaKV(urls []string, clients int, tlsCfg *tls.Config, token string) *LambdaKV {
	tr := &http.Transport{MaxIdleConns: 4 * clients, MaxIdleConnsPerHost: 2 * clients, IdleConnTimeout: time.Minute,
		TLSClientConfig: tlsCfg}
	hc := &http.Client{Transport: tr}
	opts := []client.Option{client.WithHTTPClient(hc)}
	if token != "" {
		opts = append(opts, client.WithAuth(token))
	}
	l := &LambdaKV{}
	for w := range max(clients, 1) {
		c, err := client.New(urls[w%len(urls)], opts...)
		if err != nil {
			panic(err) // URLs and tokens this package produced
		}
		l.clients = append(l.clients, c)
	}
	return l
}

func (l *LambdaKV) client(w int) *client.Client { return l.clients[w%len(l.clients)] }

// Put writes key.
func (l *LambdaKV) Put(ctx context.Context, w int, key string, val []byte) error {
	_, err := l.client(w).Put(ctx, key, val)
	return err
}

// Get reads key at consistency; a missing key is an error.
func (l *LambdaKV) Get(ctx context.Context, w int, key, consistency string) error {
	var opts []client.ReadOption
	if consistency != "" {
		opts = append(opts, client.WithConsistency(client.Consistency(consistency)))
	}
	_, found, err := l.client(w).Get(ctx, key, opts...)
	if err == nil && !found {
		err = fmt.Errorf("GET %s: not found", key)
	}
	return err
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
