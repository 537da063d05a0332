# jomo's substantive-model-compatible imputation on the datasets of benchmarks/study_substantive.py
# (written by benchmarks/jomo_substantive.py), analysed with lme4 and pooled with mitml.
#
# Usage: Rscript jomo_substantive.R DATADIR OUT.csv [M NBURN NBETWEEN]
#   DATADIR holds one CSV per replication named <design>_<rep>.csv (design: interaction,
#   quadratic or binary), columns g, x, z, y (x has NA; z is constant within g).
#   OUT.csv gets rows design,method,rep,parameter,estimate,conf_low,conf_high (method "jomo"),
#   appended after each replication (header written when the file is new).
#
# Imputation (defaults M = 20, nburn = 1000, nbetween = 100):
#   interaction: jomo.lmer(y ~ x * z + (1 + x | g))
#   quadratic:   jomo.lmer(y ~ x + I(x^2) + z + (1 + x | g))
#   binary:      jomo.glmer(y ~ x + z + (1 + x | g), family = "binomial")  (probit inside jomo)
#   level = 1 for x and y, 2 for z (a cluster-level covariate: jomo models it in the level-2 part
#   of the covariate model); jomo's value for the cluster column is irrelevant.
#   Conventions taken from jomo's R sources (R/jomo.lmer.R, R/jomo.glmer.R):
#   - powers must be written I(x^2) (jomo parses the text "I(", "^");
#   - one grouping factor, all random terms in one bracket, cluster name read from "| g";
#   - the cluster column is kept numeric (as in jomo's examples; jomo factors it itself). A factor
#     cluster declared at level 1 goes through jomo's categorical branch, whose removal of the
#     cluster from Y.numcat indexes after the column is dropped;
#   - the cluster variable must come after x in the formula (jomo records x's column index
#     before it removes the cluster column from its covariate table);
#   - the result is long format with Imputation 0 = the original data, the cluster column
#     renamed "clus" and, for jomo.glmer, the outcome returned as a factor.
#   jomo runs nburn iterations before the first imputation and nbetween before each later one,
#   i.e. nburn + (M - 1) * nbetween iterations in all; _ms_per_iteration divides by that.
#
# Analysis on each completed dataset: lmer(REML = TRUE) / glmer(binomial (logit), nAGQ = 1), lme4
# default controls. Pooling: mitml::testEstimates(df.com = nobs - p) (Rubin's rules with
# Barnard-Rubin df) and its 95% confint for fixed effects; extra.pars = TRUE (formerly var.comp)
# gives the variance components averaged over imputations (no interval: conf_* left empty).
#
# Extra rows per replication (parameter names starting with "_"): _seconds (imputation +
# analysis + pooling), _jomo_seconds (the jomo call), _ms_per_iteration, _fit_warnings (number of
# the M analysis fits that raised a warning, e.g. lme4's "Model failed to converge"),
# _fit_singular (number of singular fits), _jomo_warnings (warnings raised inside the jomo call:
# from its complete-case lmer/glmer fit, which gives jomo's starting values and the scale matrix of
# its inverse-Wishart prior for the random-effects covariance). Warning texts go to stderr.

suppressPackageStartupMessages({
  library(jomo)
  library(lme4)
  library(mitml)
})

args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 2) stop("usage: Rscript jomo_substantive.R DATADIR OUT.csv [M NBURN NBETWEEN]")
data.dir <- args[1]
out.csv <- args[2]
M <- if (length(args) >= 3) as.integer(args[3]) else 20L
NBURN <- if (length(args) >= 4) as.integer(args[4]) else 1000L
NBETWEEN <- if (length(args) >= 5) as.integer(args[5]) else 100L

DESIGNS <- c("interaction", "quadratic", "binary")
IMP_FORMULA <- list(
  interaction = y ~ x * z + (1 + x | g),
  quadratic = y ~ x + I(x^2) + z + (1 + x | g),
  binary = y ~ x + z + (1 + x | g)
)
# fixed-effect names as in study_substantive.py (formulaic spelling)
fixed_name <- function(nm) {
  nm <- sub("^\\(Intercept\\)$", "Intercept", nm)
  sub("^I\\(x\\^2\\)$", "I(x ** 2)", nm)
}
# mitml's variance-component names -> study_substantive.py's
vc_name <- function(nm) {
  nm <- sub("\\|g$", "", nm)
  if (nm == "Residual~~Residual") return("Residual")
  p <- strsplit(nm, "~~", fixed = TRUE)[[1]]
  if (p[1] == p[2]) sprintf("var(%s)", p[1]) else sprintf("cov(%s,%s)", p[1], p[2])
}

files <- sort(list.files(data.dir, pattern = "^(interaction|quadratic|binary)_[0-9]+\\.csv$"))
if (length(files) == 0) stop("no <design>_<rep>.csv files in ", data.dir)

for (f in files) {
  design <- sub("_[0-9]+\\.csv$", "", f)
  rep <- as.integer(sub("^.*_([0-9]+)\\.csv$", "\\1", f))
  d <- read.csv(file.path(data.dir, f))
  d <- data.frame(g = as.integer(d$g), x = as.numeric(d$x), z = as.numeric(d$z), y = as.numeric(d$y))
  level <- c(g = 1, x = 1, z = 2, y = 1)  # in the order of the columns of d
  fml <- IMP_FORMULA[[design]]
  binary <- design == "binary"
  set.seed(20261201L + 1000L * match(design, DESIGNS) + rep)

  t.start <- proc.time()[["elapsed"]]
  # warnings inside jomo come from its complete-case lmer/glmer fit (starting values and the
  # prior scale of the random-effects covariance of the substantive model)
  n.jomo.warn <- 0L
  invisible(capture.output(withCallingHandlers(
    tj <- system.time(
      imp <- if (binary) {
        jomo.glmer(fml, d, level = level, nburn = NBURN, nbetween = NBETWEEN, nimp = M, output = 0,
                   family = "binomial")
      } else {
        jomo.lmer(fml, d, level = level, nburn = NBURN, nbetween = NBETWEEN, nimp = M, output = 0)
      })[["elapsed"]],
    warning = function(w) {
      n.jomo.warn <<- n.jomo.warn + 1L
      message(sprintf("[%s rep %d] jomo: %s", design, rep, conditionMessage(w)))
      invokeRestart("muffleWarning")
    })))
  names(imp)[names(imp) == "clus"] <- "g"
  imp$y <- as.numeric(as.character(imp$y))  # jomo.glmer returns the outcome as a factor
  implist <- jomo2mitml.list(imp)            # drops Imputation 0 (the incomplete data)
  stopifnot(length(implist) == M, !anyNA(implist[[1]]$x), nrow(implist[[1]]) == nrow(d))

  n.warn <- 0L
  fit_one <- function(dd) {
    warned <- FALSE
    fit <- withCallingHandlers(
      suppressMessages(
        if (binary) glmer(fml, data = dd, family = binomial, nAGQ = 1)
        else lmer(fml, data = dd, REML = TRUE)),
      warning = function(w) {
        warned <<- TRUE
        message(sprintf("[%s rep %d] %s", design, rep, conditionMessage(w)))
        invokeRestart("muffleWarning")
      })
    if (warned) n.warn <<- n.warn + 1L
    fit
  }
  fits <- lapply(implist, fit_one)
  n.sing <- sum(vapply(fits, isSingular, logical(1)))
  p <- length(fixef(fits[[1]]))
  te <- testEstimates(fits, extra.pars = TRUE, df.com = nrow(d) - p)
  ci <- confint(te, level = 0.95)
  t.total <- proc.time()[["elapsed"]] - t.start

  est <- te$estimates
  fe <- data.frame(parameter = fixed_name(rownames(est)), estimate = est[, 1],
                   conf_low = ci[, 1], conf_high = ci[, 2])
  ep <- te$extra.pars
  ep <- ep[!grepl("^ICC", rownames(ep)), , drop = FALSE]
  vc <- data.frame(parameter = vapply(rownames(ep), vc_name, ""), estimate = ep[, 1],
                   conf_low = NA_real_, conf_high = NA_real_)
  iters <- NBURN + (M - 1) * NBETWEEN
  extra <- data.frame(parameter = c("_seconds", "_jomo_seconds", "_ms_per_iteration",
                                    "_fit_warnings", "_fit_singular", "_jomo_warnings"),
                      estimate = c(t.total, tj, 1000 * tj / iters, n.warn, n.sing, n.jomo.warn),
                      conf_low = NA_real_, conf_high = NA_real_)
  rows <- rbind(fe, vc, extra)
  rows <- data.frame(design = design, method = "jomo", rep = rep, rows, row.names = NULL)
  write.table(rows, out.csv, sep = ",", row.names = FALSE, na = "", append = file.exists(out.csv),
              col.names = !file.exists(out.csv), qmethod = "double")
  cat(sprintf("%s rep %d: jomo %.1f s (%.2f ms/iteration), total %.1f s, fit warnings %d, singular %d, jomo warnings %d\n",
              design, rep, tj, 1000 * tj / iters, t.total, n.warn, n.sing, n.jomo.warn))
}
