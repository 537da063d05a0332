# Times nlme and glmmTMB on the data written by benchmarks/accuracy_dispersion.py --large.
# Usage: Rscript dispersion_bench.R DATA.csv OUT.csv
# Model: yh ~ x + w + (1 + x | g) by REML with the residual variance log-linear in sex and w:
#   nlme:    lme(..., weights = varComb(varIdent(form = ~ 1 | sex), varExp(form = ~ w)))
#   glmmTMB: glmmTMB(..., dispformula = ~ sex + w, REML = TRUE)
# Each fit once with default controls, elapsed seconds from system.time (reading excluded).
# gamma in mlimpute's parameterisation (log sigma2_i = log sigma2 + w_i' gamma, reference sex "a"):
# nlme 2 (log delta_b - log delta_a) and 2 delta_w; glmmTMB alpha (< 1.1.9: log sigma2) or 2 alpha.
suppressMessages({library(nlme); library(glmmTMB)})
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
t1 <- system.time(m <- lme(yh ~ x + w, random = ~ 1 + x | g, data = d,
                           weights = varComb(varIdent(form = ~ 1 | sex), varExp(form = ~ w))))[["elapsed"]]
vi <- m$modelStruct$varStruct[[1]]
delta <- coef(vi, unconstrained = FALSE)
ld <- setNames(numeric(2), attr(vi, "groupNames")); ld[names(delta)] <- log(delta)
g_nlme <- c(2 * (ld[["b"]] - ld[["a"]]), 2 * coef(m$modelStruct$varStruct[[2]], unconstrained = FALSE)[["expon"]])
t2 <- system.time(g <- glmmTMB(yh ~ x + w + (1 + x | g), dispformula = ~ sex + w, data = d, REML = TRUE))[["elapsed"]]
k <- if (packageVersion("glmmTMB") >= "1.1.9") 2 else 1
g_tmb <- k * fixef(g)$disp[c("sexb", "w")]
write.csv(data.frame(package = c("nlme", "glmmTMB"),
                     version = c(as.character(packageVersion("nlme")), as.character(packageVersion("glmmTMB"))),
                     seconds = c(t1, t2), logLik = c(as.numeric(logLik(m)), as.numeric(logLik(g))),
                     gamma_sex = c(g_nlme[1], g_tmb[1]), gamma_w = c(g_nlme[2], g_tmb[2])),
          args[2], row.names = FALSE)
