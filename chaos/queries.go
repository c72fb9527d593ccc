package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"lambdadb/client"
)

// QueryWorkload checks that scatter/gather queries are never silently
// partial under faults: before the faults it writes a fixed set of records
// under sg/ (never changed afterwards), then queries them through random
// nodes at random consistency levels while the nemesis works. A query may
// fail; one that answers must give exactly the known count and sums.
type QueryWorkload struct {
	Cluster *Cluster
	Records int // default 2000
	Timeout time.Duration
	Seed    uint64

	want map[string]float64 // region → sum of amounts

	mu       sync.Mutex
	answered int
	failed   int
	wrong    []string
}

const queryPrefix = "sg/"

// Setup writes the records and waits until every replica has applied
// them (so stale reads on any replica must see all of them too).
func (q *QueryWorkload) Setup(ctx context.Context) error {
	if q.Records <= 0 {
		q.Records = 2000
	}
	up := q.Cluster.Running()
	if len(up) == 0 {
		return fmt.Errorf("query workload: no running node")
	}
	cl, err := q.Cluster.Client(up[0], q.Cluster.HTTPClient(30*time.Second))
	if err != nil {
		return err
	}
	regions := []string{"eu", "us", "ap", "sa"}
	q.want = map[string]float64{}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < q.Records; i += 8 {
				v := fmt.Sprintf(`{"region":%q,"amount":%d}`, regions[i%len(regions)], i)
				var err error
				for try := 0; try < 10; try++ {
					if _, err = cl.Put(ctx, fmt.Sprintf("%s%05d", queryPrefix, i), []byte(v)); err == nil {
						break
					}
					time.Sleep(200 * time.Millisecond)
				}
				if err != nil {
					errs <- fmt.Errorf("query workload: load: %w", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	for i := 0; i < q.Records; i++ {
		q.want[regions[i%len(regions)]] += float64(i)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, diff := appliedSignature(ctx, q.Cluster); diff == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("query workload: replicas did not catch up after loading")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Run queries until ctx ends.
func (q *QueryWorkload) Run(ctx context.Context) {
	rng := rand.New(rand.NewPCG(q.Seed, 77))
	hc := q.Cluster.HTTPClient(q.Timeout + 5*time.Second)
	for ctx.Err() == nil {
		p := pickOne(rng, q.Cluster.Running())
		if p == nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		cl, err := q.Cluster.Client(p, hc)
		if err != nil {
			continue
		}
		cons := []client.Consistency{client.Linearizable, client.Stale}[rng.IntN(2)]
		agg := &client.Aggregate{Op: "sum", Field: "amount", GroupBy: "region"}
		if rng.IntN(2) == 0 {
			agg = &client.Aggregate{Op: "count"}
		}
		res, err := cl.Query(ctx, client.QueryRequest{Prefix: queryPrefix, Aggregate: agg, Consistency: cons, Timeout: q.Timeout})
		if err != nil {
			q.mu.Lock()
			q.failed++
			q.mu.Unlock()
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if msg := q.verify(agg, res.Result); msg != "" {
			q.mu.Lock()
			q.wrong = append(q.wrong, fmt.Sprintf("%s via %s (%s): %s", agg.Op, p.ID, cons, msg))
			q.mu.Unlock()
		}
		q.mu.Lock()
		q.answered++
		q.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
}

// verify compares an answer with the known records ("" when right).
func (q *QueryWorkload) verify(agg *client.Aggregate, result json.RawMessage) string {
	if agg.Op == "count" {
		var n int
		if err := json.Unmarshal(result, &n); err != nil || n != q.Records {
			return fmt.Sprintf("count %s, want %d", result, q.Records)
		}
		return ""
	}
	var groups []struct {
		Group string  `json:"group"`
		Value float64 `json:"value"`
	}
	if err := json.Unmarshal(result, &groups); err != nil || len(groups) != len(q.want) {
		return fmt.Sprintf("sums %s, want %v", result, q.want)
	}
	for _, g := range groups {
		if v, ok := q.want[g.Group]; !ok || g.Value != v {
			return fmt.Sprintf("sums %s, want %v", result, q.want)
		}
	}
	return ""
}

// Wrong returns the answers that were not exactly right.
func (q *QueryWorkload) Wrong() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]string(nil), q.wrong...)
}

// Summary is a one-line account for the report.
func (q *QueryWorkload) Summary() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return fmt.Sprintf("%d queries over %d fixed records answered (all must be exact), %d failed", q.answered, q.Records, q.failed)
}
