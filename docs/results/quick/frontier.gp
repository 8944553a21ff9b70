set terminal pngcairo size 1000,620 font 'sans,10'
set output '/tmp/demo3/runs/demo-quick/frontier.png'

set title 'Stability-plasticity frontier: D_A retained against D_B learned (one point per stage-2 learning rate)'
set xlabel 'D_B exact match after stage 2 (plasticity)'
set ylabel 'D_A exact match after stage 2 (stability)'
set xrange [-0.05:1.05]
set yrange [-0.05:1.05]
set arrow from 0.15625,-0.05 to 0.15625,1.05 nohead dt 3 lc rgb '#888888'
set key outside bottom center horizontal
set grid
plot '/tmp/demo3/runs/demo-quick/sweep.dat' index 0 using 4:2:5:3 with xyerrorbars pt 7 lc rgb '#4477aa' title 'unmixed', '' index 0 using 4:2 with lines lw 2 lc rgb '#4477aa' notitle, '' index 0 using 4:2:(sprintf('%g', $1)) with labels offset 1.5,0.7 font ',8' tc rgb '#4477aa' notitle, '/tmp/demo3/runs/demo-quick/sweep.dat' index 1 using 4:2:5:3 with xyerrorbars pt 7 lc rgb '#ee6677' title 'REMIX, ratio 1', '' index 1 using 4:2 with lines lw 2 lc rgb '#ee6677' notitle, '' index 1 using 4:2:(sprintf('%g', $1)) with labels offset 1.5,0.7 font ',8' tc rgb '#ee6677' notitle
