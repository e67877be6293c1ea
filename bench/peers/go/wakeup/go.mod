module weft/peers/wakeup

go 1.19
