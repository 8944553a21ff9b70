set terminal pngcairo size 1000,620 font 'sans,10'
set output '/tmp/demo3/runs/demo-quick/retention_vs_lr.png'

set title 'D_A retention (solid) and D_B accuracy (dashed) after stage 2, by stage-2 learning rate'
set logscale x
set xrange [6.66667e-05:0.0015]
set xlabel 'stage-2 learning rate'
set ylabel 'exact-match accuracy (mean over seeds, 95% t-interval)'
set yrange [-0.05:1.05]
set key outside bottom center horizontal
set grid
plot '/tmp/demo3/runs/demo-quick/sweep.dat' index 0 using 1:2:3 with yerrorlines lw 2 pt 7 lc rgb '#4477aa' title 'unmixed: D_A retained', '/tmp/demo3/runs/demo-quick/sweep.dat' index 0 using 1:4:5 with yerrorlines lw 1 dt 2 pt 5 lc rgb '#4477aa' title 'unmixed: D_B learned', '/tmp/demo3/runs/demo-quick/sweep.dat' index 1 using 1:2:3 with yerrorlines lw 2 pt 7 lc rgb '#ee6677' title 'REMIX, ratio 1: D_A retained', '/tmp/demo3/runs/demo-quick/sweep.dat' index 1 using 1:4:5 with yerrorlines lw 1 dt 2 pt 5 lc rgb '#ee6677' title 'REMIX, ratio 1: D_B learned'
