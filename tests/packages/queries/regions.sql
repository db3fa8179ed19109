SELECT region FROM orders ORDER BY amount;
