// Package model holds what the shop's server and its handlers share: the
// records it stores as JSON and the keys it stores them under.
//
// Every key of a customer carries the customer's hash tag, so a
// customer's orders and running totals live on one shard:
//
//	orders/{alice}/<id>     an order (Order)
//	customers/{alice}       the customer's count and total (Customer), kept by the totals trigger
//	stock/{widget}          units in stock, a decimal integer, changed by the reserve handler
//	sold/{widget}/<c>-<id>  one marker per order line (Sold), written by the sold trigger
package model

import (
	"errors"
	"math"
	"regexp"
	"strings"
)

// Order is a placed order, stored at OrderKey(Customer, ID).
type Order struct {
	ID       string  `json:"id"`
	Customer string  `json:"customer"`
	Region   string  `json:"region"`
	Product  string  `json:"product"`
	Qty      int     `json:"qty"`
	Amount   float64 `json:"amount"` // the order's total, in currency units with cents
	Placed   string  `json:"placed"` // RFC 3339, the shop's clock
}

// Cents is the order's amount in cents.
func (o Order) Cents() int64 { return ToCents(o.Amount) }

// Customer is a customer's running totals, stored at CustomerKey.
type Customer struct {
	Customer   string  `json:"customer"`
	Orders     int     `json:"orders"`
	Total      float64 `json:"total"`       // TotalCents / 100, for queries (topk total)
	TotalCents int64   `json:"total_cents"` // exact
	// Last is the version (Raft index) of the last order counted: the
	// trigger counts an order only if its version is above it, so a
	// change delivered twice is counted once.
	Last uint64 `json:"last"`
}

// Sold is one order's units of a product, stored at SoldKey.
type Sold struct {
	Product string `json:"product"`
	Qty     int    `json:"qty"`
}

// Reserve is the reserve handler's request: take Qty units (give them
// back when negative).
type Reserve struct {
	Qty int `json:"qty"`
}

// Reserved is the reserve handler's answer: OK when the units were taken
// (or given back), Left the units in stock after it; Unknown when the
// product has no stock record.
type Reserved struct {
	OK      bool `json:"ok"`
	Left    int  `json:"left"`
	Unknown bool `json:"unknown,omitempty"`
}

// Key prefixes.
const (
	OrdersPrefix    = "orders/"
	CustomersPrefix = "customers/"
	StockPrefix     = "stock/"
	SoldPrefix      = "sold/"
)

// OrderKey is where customer c's order id is stored.
func OrderKey(c, id string) string { return OrdersPrefix + "{" + c + "}/" + id }

// CustomerOrdersPrefix is the prefix of customer c's orders.
func CustomerOrdersPrefix(c string) string { return OrdersPrefix + "{" + c + "}/" }

// CustomerKey is where customer c's totals are stored.
func CustomerKey(c string) string { return CustomersPrefix + "{" + c + "}" }

// StockKey is where product p's stock is stored.
func StockKey(p string) string { return StockPrefix + "{" + p + "}" }

// SoldKey is the marker of order id of customer c for product p.
func SoldKey(p, c, id string) string { return SoldPrefix + "{" + p + "}/" + c + "-" + id }

// ProductSoldPrefix is the prefix of product p's markers.
func ProductSoldPrefix(p string) string { return SoldPrefix + "{" + p + "}/" }

// TagOf returns the hash tag of a key built here ("alice" of
// "customers/{alice}").
func TagOf(key string) string {
	i := strings.IndexByte(key, '{')
	j := strings.IndexByte(key, '}')
	if i < 0 || j < i {
		return ""
	}
	return key[i+1 : j]
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// ValidName reports whether s can name a customer, a product or a region:
// 1-32 of a-z 0-9 -, starting with a letter or digit.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// ToCents rounds an amount to whole cents.
func ToCents(a float64) int64 { return int64(math.Round(a * 100)) }

// Validate checks an order as placed.
func (o Order) Validate() error {
	switch {
	case !ValidName(o.Customer):
		return errors.New("customer: want 1-32 of a-z 0-9 -")
	case !ValidName(o.Region):
		return errors.New("region: want 1-32 of a-z 0-9 -")
	case !ValidName(o.Product):
		return errors.New("product: want 1-32 of a-z 0-9 -")
	case o.Qty < 1 || o.Qty > 1000:
		return errors.New("qty: want 1..1000")
	case !(o.Amount > 0) || o.Amount > 1e9 || math.IsInf(o.Amount, 0):
		return errors.New("amount: want a positive number up to 1e9")
	}
	return nil
}
