package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"sync"
	"time"

	"lambdadb/client"
)

// TriggerWorkload checks that a trigger loses no change under faults:
// writers put unique keys under tw/ (each under one of eight hash tags),
// a trigger runs the indexer example on them, and at the end every
// acknowledged put must have its idx/ copy with the same value.
type TriggerWorkload struct {
	Cluster *Cluster
	Wasm    string // the indexer module
	Writers int
	Timeout time.Duration
	Seed    uint64

	mu    sync.Mutex
	acked map[string]string
	tried int
}

// triggerPrefix is the watched prefix; the indexer writes idx/<key>.
const triggerPrefix = "tw/"

// Setup deploys the indexer and creates the trigger.
func (t *TriggerWorkload) Setup(ctx context.Context) error {
	wasm, err := os.ReadFile(t.Wasm)
	if err != nil {
		return fmt.Errorf("trigger workload: %w (build it with make examples)", err)
	}
	t.acked = map[string]string{}
	up := t.Cluster.Running()
	if len(up) == 0 {
		return fmt.Errorf("trigger workload: no running node")
	}
	cl, err := t.Cluster.Client(up[0], t.Cluster.HTTPClient(60*time.Second))
	if err != nil {
		return err
	}
	var lastErr error
	for i := 0; i < 10; i++ {
		if _, lastErr = cl.Deploy(ctx, "chaos-indexer", wasm, client.DeployOptions{TimeoutMS: 5000}); lastErr == nil {
			break
		}
		time.Sleep(time.Second)
	}
	if lastErr != nil {
		return fmt.Errorf("trigger workload: deploy: %w", lastErr)
	}
	for i := 0; i < 10; i++ {
		if _, lastErr = cl.CreateTrigger(ctx, "chaos", client.Trigger{Function: "chaos-indexer", Prefix: triggerPrefix,
			BatchSize: client.Int(50), MaxWaitMS: client.Int(50), MaxRetries: client.Int(100)}); lastErr == nil {
			return nil
		}
		time.Sleep(time.Second)
	}
	return fmt.Errorf("trigger workload: create trigger: %w", lastErr)
}

// Run writes until ctx ends.
func (t *TriggerWorkload) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for w := 0; w < t.Writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(t.Seed, uint64(w)+1000))
			hc := t.Cluster.HTTPClient(t.Timeout)
			for i := 0; ctx.Err() == nil; i++ {
				p := pickOne(rng, t.Cluster.Running())
				if p == nil {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				cl, err := t.Cluster.Client(p, hc)
				if err != nil {
					continue
				}
				key := fmt.Sprintf("%s{k%d}/w%d-%d", triggerPrefix, rng.IntN(8), w, i)
				val := fmt.Sprintf("v%d-%d", w, i)
				t.mu.Lock()
				t.tried++
				t.mu.Unlock()
				if _, err := cl.Put(ctx, key, []byte(val)); err == nil {
					t.mu.Lock()
					t.acked[key] = val
					t.mu.Unlock()
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
}

// Check waits up to d for every acknowledged put's index entry and
// returns the keys still missing (or wrong).
func (t *TriggerWorkload) Check(ctx context.Context, d time.Duration) (acked int, missing []string) {
	t.mu.Lock()
	want := make(map[string]string, len(t.acked))
	for k, v := range t.acked {
		want[k] = v
	}
	t.mu.Unlock()
	deadline := time.Now().Add(d)
	for {
		missing = missing[:0]
		got, err := t.index(ctx)
		if err == nil {
			for k, v := range want {
				if got["idx/"+k] != v {
					missing = append(missing, k)
				}
			}
			if len(missing) == 0 {
				return len(want), nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			sort.Strings(missing)
			if err != nil {
				missing = append(missing, "(reading the index failed: "+err.Error()+")")
			}
			return len(want), missing
		}
		time.Sleep(time.Second)
	}
}

func (t *TriggerWorkload) index(ctx context.Context) (map[string]string, error) {
	up := t.Cluster.Running()
	if len(up) == 0 {
		return nil, fmt.Errorf("no node is up")
	}
	cl, err := t.Cluster.Client(up[0], t.Cluster.HTTPClient(30*time.Second))
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for it, err := range cl.ScanAll(ctx, "idx/"+triggerPrefix, client.ScanOptions{Limit: 1000}) {
		if err != nil {
			return nil, err
		}
		out[it.Key] = string(it.Value)
	}
	return out, nil
}

// Summary is a one-line account for the report.
func (t *TriggerWorkload) Summary() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return fmt.Sprintf("%d puts tried, %d acknowledged", t.tried, len(t.acked))
}
