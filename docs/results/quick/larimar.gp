set terminal pngcairo size 1000,620 font 'sans,10'
set output '/tmp/demo3/runs/demo-quick/larimar.png'
set multiplot layout 1,3
set title 'first batch after N writes (K = 16)'
set xlabel 'N / K'
set ylabel 'memory recall (readout error <= 0.1)'
set yrange [-0.05:1.1]
set logscale x 2
set xrange [0.2:2.5]
set key bottom left font ',8'
plot '/tmp/demo3/runs/demo-quick/larimar.dat' index 0 using 1:2:3 with yerrorlines lw 2 lc rgb '#4477aa' title 'first batch', \
     '' index 0 using 1:4:5 with yerrorlines lw 2 dt 2 lc rgb '#bbbbbb' title 'never written (control)'
unset logscale x
set title 'forgetting after N = K writes'
set xlabel ''
set xrange [-0.6:2.6]
set style fill solid 0.6
set boxwidth 0.6
plot '/tmp/demo3/runs/demo-quick/larimar.dat' index 1 using 1:2:xtic(4) with boxes lc rgb '#ee6677' notitle, \
     '' index 1 using 1:2:3 with yerrorbars lc rgb 'black' notitle
set title 'D_A after stage 2 (lr 0.0003)'
set ylabel 'D_A recalled'
set xrange [-0.6:2.6]
set xtics rotate by -30
plot '/tmp/demo3/runs/demo-quick/larimar.dat' index 2 using 1:2:xtic(4) with boxes lc rgb '#228833' notitle, \
     '' index 2 using 1:2:3 with yerrorbars lc rgb 'black' notitle
unset multiplot
