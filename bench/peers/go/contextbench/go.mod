module weft/peers/contextbench

go 1.19
