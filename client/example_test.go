package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"lambdadb/client"
	"lambdadb/server"
	"lambdadb/shard"
)

// serverURL is the address of an in-process server shared by the examples.
var serverURL string

func TestMain(m *testing.M) {
	node, err := shard.Open(shard.Config{Dir: "/n1", FS: vfs.NewMem(), Shards: 4})
	if err != nil {
		log.Fatal(err)
	}
	h, err := server.New(server.Config{Node: node})
	if err != nil {
		log.Fatal(err)
	}
	ts := httptest.NewServer(h)
	serverURL = ts.URL
	code := m.Run()
	ts.Close()
	if err := node.Close(); err != nil {
		log.Fatal(err)
	}
	os.Exit(code)
}

func Example() {
	ctx := context.Background()
	c, err := client.New(serverURL) // e.g. "http://127.0.0.1:7070"
	if err != nil {
		log.Fatal(err)
	}
	version, err := c.Put(ctx, "greeting", []byte("hello"))
	if err != nil {
		log.Fatal(err)
	}
	item, found, err := c.Get(ctx, "greeting")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(found, string(item.Value), item.Version == version)

	deleted, err := c.Delete(ctx, "greeting")
	if err != nil {
		log.Fatal(err)
	}
	_, found, err = c.Get(ctx, "greeting")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(deleted, found)
	// Output:
	// true hello true
	// true false
}

// Compare-and-set: write only if nobody changed the key since it was read.
func ExampleIfMatch() {
	ctx := context.Background()
	c, err := client.New(serverURL)
	if err != nil {
		log.Fatal(err)
	}
	v1, err := c.Put(ctx, "counter", []byte("1"))
	if err != nil {
		log.Fatal(err)
	}
	// Succeeds: the key is still at v1.
	if _, err := c.Put(ctx, "counter", []byte("2"), client.IfMatch(v1)); err != nil {
		log.Fatal(err)
	}
	// Fails: the key has moved on from v1.
	_, err = c.Put(ctx, "counter", []byte("3"), client.IfMatch(v1))
	fmt.Println(errors.Is(err, client.ErrPrecondition))

	var e *client.Error
	if errors.As(err, &e) {
		fmt.Println(e.Status, e.Code)
	}
	// Output:
	// true
	// 412 precondition_failed
}

// Create a key only if it does not exist yet.
func ExampleIfNoneMatch() {
	ctx := context.Background()
	c, err := client.New(serverURL)
	if err != nil {
		log.Fatal(err)
	}
	_, err = c.Put(ctx, "lock/job-42", []byte("worker-a"), client.IfNoneMatch())
	fmt.Println(err)
	_, err = c.Put(ctx, "lock/job-42", []byte("worker-b"), client.IfNoneMatch())
	fmt.Println(errors.Is(err, client.ErrPrecondition))
	// Output:
	// <nil>
	// true
}

func ExampleClient_ScanAll() {
	ctx := context.Background()
	c, err := client.New(serverURL)
	if err != nil {
		log.Fatal(err)
	}
	for _, k := range []string{"fruit/cherry", "fruit/apple", "fruit/banana", "veg/leek"} {
		if _, err := c.Put(ctx, k, []byte("x")); err != nil {
			log.Fatal(err)
		}
	}
	// Pages of two keys, fetched as the loop goes.
	for item, err := range c.ScanAll(ctx, "fruit/", client.ScanOptions{Limit: 2}) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(item.Key)
	}
	// Output:
	// fruit/apple
	// fruit/banana
	// fruit/cherry
}

// A session moves between clients (or processes) as its token.
func ExampleWithToken() {
	ctx := context.Background()
	writer, err := client.New(serverURL)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := writer.Put(ctx, "profile/ada", []byte("Ada Lovelace")); err != nil {
		log.Fatal(err)
	}
	// The reader continues the writer's session, so even a replica that
	// lags the leader serves it the write.
	reader, err := client.New(serverURL, client.WithToken(writer.Token()))
	if err != nil {
		log.Fatal(err)
	}
	item, _, err := reader.Get(ctx, "profile/ada", client.WithConsistency(client.Session))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(item.Value))
	// Output: Ada Lovelace
}
