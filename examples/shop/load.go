package shop

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"lambdadb/examples/shop/model"
)

// Customers are the names Load places orders for.
var Customers = []string{"ada", "alan", "barbara", "claude", "donald", "edsger", "frances", "grace", "hedy", "ivan",
	"john", "ken", "leslie", "linus", "margaret", "niklaus", "radia", "rob", "shafi", "tony", "vint", "whitfield",
	"adele", "butler", "dennis", "fran", "jean", "kathleen", "katherine", "lynn"}

// RandomOrder returns an order of the catalog drawn from rng: a few
// customers buy much more often than the others, most orders are small.
func (s *Shop) RandomOrder(rng *rand.Rand) model.Order {
	// A skewed pick: low indexes far more often.
	c := Customers[int(float64(len(Customers))*rng.Float64()*rng.Float64())]
	p := s.cfg.Catalog[rng.IntN(len(s.cfg.Catalog))]
	qty := 1
	switch r := rng.IntN(100); {
	case r < 45:
	case r < 70:
		qty = 2
	case r < 88:
		qty = 3 + rng.IntN(3)
	case r < 97:
		qty = 6 + rng.IntN(5)
	default:
		qty = 11 + rng.IntN(10)
	}
	region := Regions[min(rng.IntN(len(Regions)+2), len(Regions)-1)] // some regions more than others
	return model.Order{Customer: c, Region: region, Product: p.Name, Qty: qty, Amount: float64(model.ToCents(p.Price*float64(qty))) / 100}
}

// Load places n random orders (seeded) through PlaceOrder, 8 at a time,
// and returns how many were placed and how many were out of stock.
func (s *Shop) Load(ctx context.Context, n int, seed uint64) (placed, outOfStock int, err error) {
	var p, oos atomic.Int64
	var mu sync.Mutex
	var firstErr error
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || ctx.Err() != nil {
					return
				}
				rng := rand.New(rand.NewPCG(seed, uint64(i)))
				_, _, _, err := s.PlaceOrder(ctx, "", s.RandomOrder(rng))
				switch {
				case errors.Is(err, ErrOutOfStock):
					oos.Add(1)
				case err != nil:
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("order %d: %w", i, err)
					}
					mu.Unlock()
				default:
					p.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return int(p.Load()), int(oos.Load()), firstErr
}
