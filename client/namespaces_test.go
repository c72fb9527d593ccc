package client_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"

	"lambdadb/auth"
	"lambdadb/client"
	"lambdadb/internal/testnode"
	"lambdadb/server"
)

func TestNamespaceQuotas(t *testing.T) {
	ctx := context.Background()
	n := testnode.New(t)
	store, err := auth.New(auth.Config{Node: n})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Node: n, Auth: store})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	anon, err := client.New(ts.URL)
	if err != nil {
		t.Fatal(err)
	}
	root, err := anon.Bootstrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := client.New(ts.URL, client.WithAuth(root.Token))
	if err != nil {
		t.Fatal(err)
	}
	if list, err := admin.Namespaces(ctx); err != nil || len(list) != 0 {
		t.Fatalf("Namespaces = %v, %v", list, err)
	}
	want := client.Quota{OpsPerS: 3, StoredBytes: 1 << 20}
	info, err := admin.SetQuota(ctx, "acme", want)
	if err != nil || info.Namespace != "acme" || info.Quota != want {
		t.Fatalf("SetQuota = %+v, %v", info, err)
	}
	if info, err := admin.Quota(ctx, "acme"); err != nil || info.Quota != want {
		t.Fatalf("Quota = %+v, %v", info, err)
	}
	if list, err := admin.Namespaces(ctx); err != nil || len(list) != 1 || list[0].Quota != want {
		t.Fatalf("Namespaces = %+v, %v", list, err)
	}
	var e *client.Error
	if _, err := admin.SetQuota(ctx, "acme", client.Quota{Concurrency: -1}); !errors.As(err, &e) || e.Status != 400 {
		t.Fatalf("negative quota: %v", err)
	}
	if _, err := anon.Namespaces(ctx); !errors.Is(err, client.ErrUnauthenticated) {
		t.Fatalf("without a token: %v", err)
	}
	// Over the rate: ErrQuotaExceeded, not retried.
	is, err := admin.CreateToken(ctx, "acme", []string{"kv:read:*"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	acme, err := client.New(ts.URL, client.WithAuth(is.Token))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		_, _, err := acme.Get(ctx, "k")
		if errors.Is(err, client.ErrQuotaExceeded) {
			break
		}
		if !errors.Is(err, client.ErrNotFound) || i > 10 {
			t.Fatalf("get %d: %v", i, err)
		}
	}
}
